"""Instruction-following mixed in on the real SmolLM2-135M-Instruct: configs/paper/instruction_mixed.py (r = 1.0,
0.75, 0.5; the prompt-change sets) with configs/real_study.py's LoRA settings, 64 steps of 8 rows, two seeds.

Budget (this 2-core CPU): 384 steps of about 6 s and six evaluations of about 2.5 minutes: about 55 minutes.
Measured there (2026-12-03/04, docs/studies.md): sweep 52 min 42 s.

    python -m monitor_jax.main eval --config=configs/paper/instruction_mixed_real.py      # the zero-shot row
    python -m monitor_jax.main sweep --config=configs/paper/instruction_mixed_real.py
    python -m monitor_jax.main report --sweep=runs/instruction_mixed_real      # paired: 0.75 - 1, 0.5 - 1
"""
import runpy
from pathlib import Path

_here = Path(__file__).resolve().parent
_study = runpy.run_path(str(_here.parent / "real_study.py"))
_paper = runpy.run_path(str(_here / "instruction_mixed.py"))


def get_config():
    c = _study["real"](_paper["get_config"](), "runs/instruction_mixed_real", steps=64)
    c.sweep.paired = (("data.mixing.value", "0.75", "1"), ("data.mixing.value", "0.5", "1"))
    return c
