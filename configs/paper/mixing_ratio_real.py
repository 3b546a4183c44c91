"""The mixing-ratio grid on the real SmolLM2-135M-Instruct: configs/paper/mixing_ratio.py (r = 0.25, 0.5, 0.75,
1.0; the demo's trained and held-out sets) with configs/real_study.py's LoRA settings, 48 steps of 8 rows,
two seeds.

Budget (this 2-core CPU): 384 steps of about 6 s and eight evaluations of about 2 minutes: about 55 minutes.
Measured there (2026-12-03/04, docs/studies.md): sweep 49 min 40 s.

    python -m monitor_jax.main eval --config=configs/paper/mixing_ratio_real.py      # the zero-shot row
    python -m monitor_jax.main sweep --config=configs/paper/mixing_ratio_real.py
    python -m monitor_jax.main report --sweep=runs/mixing_ratio_real      # AUROC against r; paired: each r - 1
"""
import runpy
from pathlib import Path

_here = Path(__file__).resolve().parent
_study = runpy.run_path(str(_here.parent / "real_study.py"))
_paper = runpy.run_path(str(_here / "mixing_ratio.py"))


def get_config():
    c = _study["real"](_paper["get_config"](), "runs/mixing_ratio_real", steps=48)
    c.sweep.paired = tuple(("data.mixing.value", r, "1") for r in ("0.25", "0.5", "0.75"))
    return c
