"""The prompt change on the real SmolLM2-135M-Instruct: configs/paper/prompt_change.py (classification only, r = 1;
chem_harm, cyber_harm and the held-out agent domain each under its training, paraphrased and inverted prompt)
with configs/real_study.py's LoRA settings, 192 steps of 8 rows, two seeds.

Budget (this 2-core CPU): about 6 s a LoRA step at 8 x 128 (measured on these configs) and one evaluation of
9 x 48 rows plus the 21 trajectories a run (about 2.5 minutes): about 22 minutes a run, 45 for the sweep.
Measured there (2026-12-03/04, docs/studies.md): sweep 41 min 31 s.

    python -m monitor_jax.main eval --config=configs/paper/prompt_change_real.py      # the zero-shot row, once
    python -m monitor_jax.main sweep --config=configs/paper/prompt_change_real.py
    python -m monitor_jax.main report --sweep=runs/prompt_change_real

The claim: after training, the inverted sets fall below 0.5 (the monitor applies the trained rule, not the
prompt); `eval`'s zero-shot report is the before.
"""
import runpy
from pathlib import Path

_here = Path(__file__).resolve().parent
_study = runpy.run_path(str(_here.parent / "real_study.py"))
_paper = runpy.run_path(str(_here / "prompt_change.py"))


def get_config():
    c = _study["real"](_paper["get_config"](), "runs/prompt_change_real", steps=192)
    return c
