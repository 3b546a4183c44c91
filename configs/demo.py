"""The demo: a small random-init model on the embedded synthetic monitor suite, CPU, a few minutes.

Trains on harmful-request classification in two domains (chemistry-like and
cyber-like) plus instruction following, and evaluates on those domains' test
splits and on three held-out domains (agent transcripts, covert reasoning,
sentiment) and one prompt variant (cyber under an inverted prompt).

    python -m monitor_jax.main train --config=configs/demo.py --config.train.steps=100
"""
from monitor_jax.config import base_config


def research(domain, split, n=None):
    return {"kind": "research", "domain": domain, "split": split, "n": n}


def get_config():
    c = base_config()
    c.workdir = "runs/demo"
    c.model.tokenizer = "demo"          # build the demo tokenizer into <workdir>/tokenizer
    c.model.config = dict(family="qwen3", embed_dim=128, num_layers=4, num_heads=4, num_kv_heads=2, head_dim=32,
                          mlp_dim=384, qk_norm=True, tie_embeddings=True, rope_theta=10_000.0)
    c.data.max_length = 128
    c.data.classification = [
        {"task": "chem_harm", "source": research("chem_harm", "train"), "weight": 1.0},
        {"task": "cyber_harm", "source": research("cyber_harm", "train"), "weight": 1.0},
    ]
    c.data.instruction = {"task": "instruct", "source": research("instruct", "train"), "pack": True}
    c.data.mixing = {"kind": "constant", "value": 0.75}
    c.eval.tasks = [
        {"task": "chem_harm", "source": research("chem_harm", "test", 300), "heldout": False},
        {"task": "cyber_harm", "source": research("cyber_harm", "test", 300), "heldout": False},
        {"task": "cyber_harm_inverted", "source": research("cyber_harm", "test", 300), "heldout": False},
        # The accuracy threshold of a held-out domain is chosen on a few of its training rows.
        {"task": "control_arena", "source": research("control_arena", "test", 300), "heldout": True,
         "calibration": research("control_arena", "train", 100)},
        {"task": "covert_reasoning", "source": research("covert_reasoning", "test", 300), "heldout": True},
        {"task": "imdb", "source": research("imdb", "test", 300), "heldout": True},
    ]
    c.eval.buckets = (64, 128)
    c.eval.batch_size = 32
    c.eval.bootstrap = 200
    c.eval.every = 150
    c.loss.chunk_size = 64
    c.optim.lr = 3e-3
    c.optim.warmup_steps = 30
    c.train.steps = 450
    c.train.batch_size = 32
    c.train.log_every = 25
    c.train.checkpoint_every = 150
    c.train.best_metric = "eval/mean_heldout_auroc"
    return c
