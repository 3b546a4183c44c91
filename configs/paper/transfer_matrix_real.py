"""The transfer matrix on the real SmolLM2-135M-Instruct: train on one domain at a time, evaluate on every
domain (demo suite by default, or your files with --config.data_root), CPU, about 45 minutes for 5 runs.

configs/demo_real.py's model and optimizer, classification only (r = 1), 48 steps x 16 rows per training
domain; each run is evaluated before (the zero-shot row, the same in every run) and after, 128 test rows per
domain, and `report --sweep` draws the training domain x eval domain heatmap.

    pip install -e '.[real]'
    python -m monitor_jax.main sweep --config=configs/paper/transfer_matrix_real.py
    python -m monitor_jax.main report --sweep=runs/transfer_matrix_real

Figures: docs/studies.md ("The transfer matrix on SmolLM2-135M-Instruct").
"""
import runpy
from pathlib import Path

_real = runpy.run_path(str(Path(__file__).resolve().parents[1] / "demo_real.py"))
DOMAINS = ("chem_harm", "cyber_harm", "control_arena", "covert_reasoning", "imdb")


def get_config():
    c = _real["get_config"]()
    research = _real["research"]
    c.workdir = "runs/transfer_matrix_real"
    c.data.instruction = {}
    c.data.mixing = {"kind": "constant", "value": 1.0}
    c.data.classification = [{"task": DOMAINS[0], "source": research(DOMAINS[0], "train"), "weight": 1.0}]
    c.eval.tasks = [{"task": d, "source": research(d, "test", 128), "heldout": False} for d in DOMAINS]
    c.eval.bootstrap = 1000
    # 48 steps of about 8 s and two evaluations of 640 rows make a run about 9 minutes on 2 CPU cores.
    c.optim.lr = 5e-4
    c.optim.warmup_steps = 5
    c.train.steps = 48
    c.train.log_every = 4
    c.train.checkpoint_every = 48       # 1.6 GB a checkpoint: the final one only (it marks the run finished)
    c.sweep.grid = (("data.classification",
                     tuple([{"task": d, "source": research(d, "train"), "weight": 1.0}] for d in DOMAINS), DOMAINS),)
    return c
