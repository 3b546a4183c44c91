"""Dilution: per-source vs pooled loss normalisation, at a low and a high classification share (demo suite).

Per-source normalisation averages each loss over its own rows or tokens before weighting, so the
classification signal keeps its weight however many instruction tokens share the batch; pooled
normalisation averages over everything, so many instruction tokens dilute the few label positions
(train/losses.py: combine).

    python -m monitor_jax.main sweep --config=configs/paper/dilution.py
    python -m monitor_jax.main report --sweep=runs/dilution
"""
import runpy
from pathlib import Path

_demo_config = runpy.run_path(str(Path(__file__).resolve().parents[1] / "demo.py"))


def get_config():
    c = _demo_config["get_config"]()
    c.workdir = "runs/dilution"
    c.train.best_metric = ""
    c.sweep.grid = (("loss.normalization", ("per_source", "pooled")), ("data.mixing.value", (0.25, 0.75)))
    return c
