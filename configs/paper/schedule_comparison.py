"""Mixing schedules compared at the same mean classification share: constant vs linear vs staged (demo suite).

r(step) is the share of each batch that is classification rows (data/mixing.py). Each schedule below averages
0.75 over the run: constant 0.75; linear from 1.0 to 0.5; staged 1.0 for the first third, 0.625 after.

    python -m monitor_jax.main sweep --config=configs/paper/schedule_comparison.py
    python -m monitor_jax.main report --sweep=runs/schedule_comparison
"""
import runpy
from pathlib import Path

_demo_config = runpy.run_path(str(Path(__file__).resolve().parents[1] / "demo.py"))


def get_config():
    c = _demo_config["get_config"]()
    c.workdir = "runs/schedule_comparison"
    c.train.best_metric = ""
    steps = c.train.steps
    c.sweep.grid = (("data.mixing", (
        {"kind": "constant", "value": 0.75},
        {"kind": "linear", "start": 1.0, "end": 0.5, "steps": steps},
        {"kind": "staged", "boundaries": (steps // 3,), "values": (1.0, 0.625)},
    ), ("constant", "linear", "staged")),)
    return c
