"""Dilution on the real SmolLM2-135M-Instruct: configs/paper/dilution.py (per-source vs pooled loss normalisation
at r = 0.25 and 0.75) with configs/real_study.py's LoRA settings, 48 steps of 8 rows, two seeds.

Budget (this 2-core CPU): 384 steps of about 6 s and eight evaluations of about 2 minutes: about 55 minutes.
Measured there (2026-12-03/04, docs/studies.md): sweep 56 min (one run beside a test run; 6 min 26 s a run alone).

    python -m monitor_jax.main eval --config=configs/paper/dilution_real.py      # the zero-shot row
    python -m monitor_jax.main sweep --config=configs/paper/dilution_real.py
    python -m monitor_jax.main report --sweep=runs/dilution_real      # paired: per_source - pooled, at each r
"""
import runpy
from pathlib import Path

_here = Path(__file__).resolve().parent
_study = runpy.run_path(str(_here.parent / "real_study.py"))
_paper = runpy.run_path(str(_here / "dilution.py"))


def get_config():
    c = _study["real"](_paper["get_config"](), "runs/dilution_real", steps=48)
    c.sweep.paired = (("loss.normalization", "per_source", "pooled"),)
    return c
