"""Instruction-following mixed in at a ratio: does it keep the classification gain and repair the
prompt-change failure? (demo suite, CPU)

configs/demo.py's training at classification shares r = 1.0 (classification only), 0.75 and 0.5, evaluated
on the trained domains under their training, paraphrased and inverted prompts and on the held-out agent
domain (configs/paper/prompt_change.py's sets). configs/paper/mixing_ratio.py is the same grid evaluated
for transfer to the held-out domains.

    python -m monitor_jax.main sweep --config=configs/paper/instruction_mixed.py
    python -m monitor_jax.main report --sweep=runs/instruction_mixed
"""
import runpy
from pathlib import Path

_here = Path(__file__).resolve().parent
_demo_config = runpy.run_path(str(_here.parent / "demo.py"))
_prompt_change_sets = runpy.run_path(str(_here / "prompt_change.py"))["prompt_change_sets"]


def get_config():
    c = _demo_config["get_config"]()
    c.workdir = "runs/instruction_mixed"
    c.train.best_metric = ""
    c.eval.tasks = _prompt_change_sets(_demo_config["research"])
    c.sweep.grid = (("data.mixing.value", (1.0, 0.75, 0.5)),)
    return c
