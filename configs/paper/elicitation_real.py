"""Unsupervised elicitation on the real SmolLM2-135M-Instruct, demo suite, CPU, about 25 minutes.

SmolLM2 reasons (up to 64 tokens, then "Answer:") on 256 agent transcripts whose labels are removed as they
are read; the sign of its log-odds labels them; it then trains single-token on those pseudo-labels (48 steps
of 16, configs/demo_real.py's learning rate) and, for comparison, on the same rows' true labels. The report
compares zero-shot single-token, zero-shot thinking, elicited and supervised AUROC on 128 test rows each of
the agent, chemistry and sentiment domains.

    pip install -e '.[real]' && python -m monitor_jax.main elicit --config=configs/paper/elicitation_real.py

Figures: docs/benchmarks.md ("Unsupervised elicitation").
"""
import runpy
from pathlib import Path

_here = Path(__file__).resolve().parent
_real = runpy.run_path(str(_here.parent / "demo_real.py"))
_elicitation = runpy.run_path(str(_here / "elicitation_demo.py"))["elicitation"]


def get_config():
    c = _real["get_config"]()
    c.workdir = "runs/elicitation_real"
    c.eval.buckets = (80, 112, 144, 256)
    return _elicitation(c, _real["research"], rows=256, thinking_tokens=64, eval_rows=128, steps=48)
