"""Adjacent data on the real SmolLM2-135M-Instruct: configs/paper/adjacent_data.py (100 in-domain agent
transcripts plus N = 0, 300, 1200, 4800 rows of the adjacent harmful-request domains, weighted by rows) with
configs/real_study.py's LoRA settings, 48 steps of 8 rows (about 290 classification rows a run at r = 0.75:
with N = 4800 few of them are in-domain, which is the question), two seeds.

Budget (this 2-core CPU): 384 steps of about 6 s and eight evaluations of about 2 minutes: about 55 minutes.
Measured there (2026-12-03/04, docs/studies.md): sweep 51 min 12 s.

    python -m monitor_jax.main eval --config=configs/paper/adjacent_data_real.py      # the zero-shot row
    python -m monitor_jax.main sweep --config=configs/paper/adjacent_data_real.py
    python -m monitor_jax.main report --sweep=runs/adjacent_data_real      # paired: each N - 0
"""
import runpy
from pathlib import Path

_here = Path(__file__).resolve().parent
_study = runpy.run_path(str(_here.parent / "real_study.py"))
_paper = runpy.run_path(str(_here / "adjacent_data.py"))


def get_config():
    c = _study["real"](_paper["get_config"](), "runs/adjacent_data_real", steps=48)
    names = c.sweep.grid[0][2]
    c.sweep.paired = tuple(("data.classification", n, names[0]) for n in names[1:])
    return c
