"""A mixing-ratio grid: configs/demo.py's training at several classification shares r, evaluated on the trained
and the held-out domains; one run per ratio (and seed), then one table and AUROC-against-r figure.

    python -m monitor_jax.main sweep --config=configs/paper/mixing_ratio.py
    python -m monitor_jax.main report --sweep=runs/mixing_ratio

Each run is an ordinary work directory under runs/mixing_ratio/runs/NAME; rerunning the sweep skips finished
runs and resumes unfinished ones. `--config.sweep.executor=slurm` (or kubernetes) writes a job array instead.
"""
import runpy
from pathlib import Path

_demo_config = runpy.run_path(str(Path(__file__).resolve().parents[1] / "demo.py"))


def get_config():
    c = _demo_config["get_config"]()
    c.workdir = "runs/mixing_ratio"
    c.train.best_metric = ""
    c.sweep.grid = (("data.mixing.value", (0.25, 0.5, 0.75, 1.0)),)
    c.sweep.seeds = (0,)
    return c
