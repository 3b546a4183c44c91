"""The transfer matrix: train on one domain at a time, evaluate on every domain (demo suite, CPU).

One run per training domain (with the demo's instruction data mixed in at r = 0.75); `report --sweep`
draws the training domain x eval set heatmap.

    python -m monitor_jax.main sweep --config=configs/paper/transfer_matrix.py
    python -m monitor_jax.main report --sweep=runs/transfer_matrix
"""
import runpy
from pathlib import Path

_demo_config = runpy.run_path(str(Path(__file__).resolve().parents[1] / "demo.py"))
DOMAINS = ("chem_harm", "cyber_harm", "control_arena", "covert_reasoning", "imdb")


def get_config():
    c = _demo_config["get_config"]()
    demo = _demo_config["research"]
    c.workdir = "runs/transfer_matrix"
    c.train.best_metric = ""
    c.sweep.grid = (("data.classification",
                     tuple([{"task": d, "source": demo(d, "train"), "weight": 1.0}] for d in DOMAINS), DOMAINS),)
    return c
