"""The real-model demo with packed classification rows (issue 15): configs/demo_real.py, but up to 4 examples
share each row of 256 tokens and a step holds 8 rows, the same 2048 positions a step as the padded demo's
16 rows of 128.

    pip install -e '.[real]' && python -m monitor_jax.main train --config=configs/demo_real_packed.py

The demo's training rows are 67-110 tokens: padded to 128 a step holds about 73% real tokens, packed about
90%. The mixing ratio (0.75) then shares rows, that is tokens, not examples: a step holds about 16
classification examples instead of 12. Figures: docs/benchmarks.md, "Packing, the strongest peer and the
instruction step".
"""
import runpy
from pathlib import Path

_demo_real = runpy.run_path(str(Path(__file__).resolve().parent / "demo_real.py"))["get_config"]


def get_config():
    c = _demo_real()
    c.workdir = "runs/demo_real_packed"
    c.data.max_length = 256
    c.data.pack_classification = 4
    c.train.batch_size = 8
    return c
