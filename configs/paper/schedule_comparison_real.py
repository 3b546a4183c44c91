"""Mixing schedules on the real SmolLM2-135M-Instruct: configs/paper/schedule_comparison.py (constant 0.75,
linear 1.0 -> 0.5, staged 1.0 then 0.625: the same mean share) with configs/real_study.py's LoRA settings, 64
steps of 8 rows, two seeds.

Budget (this 2-core CPU): 384 steps of about 6 s and six evaluations of about 2.5 minutes: about 55 minutes.
Measured there (2026-12-03/04, docs/studies.md): sweep 49 min.

    python -m monitor_jax.main eval --config=configs/paper/schedule_comparison_real.py      # the zero-shot row
    python -m monitor_jax.main sweep --config=configs/paper/schedule_comparison_real.py
    python -m monitor_jax.main report --sweep=runs/schedule_comparison_real      # paired: each - constant
"""
import runpy
from pathlib import Path

_here = Path(__file__).resolve().parent
_study = runpy.run_path(str(_here.parent / "real_study.py"))
_paper = runpy.run_path(str(_here / "schedule_comparison.py"))

STEPS = 64


def get_config():
    c = _study["real"](_paper["get_config"](), "runs/schedule_comparison_real", steps=STEPS)
    c.sweep.grid = (("data.mixing", (
        {"kind": "constant", "value": 0.75},
        {"kind": "linear", "start": 1.0, "end": 0.5, "steps": STEPS},
        {"kind": "staged", "boundaries": (STEPS // 3,), "values": (1.0, 0.625)},
    ), ("constant", "linear", "staged")),)
    c.sweep.paired = (("data.mixing", "linear", "constant"), ("data.mixing", "staged", "constant"))
    return c
