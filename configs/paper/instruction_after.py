"""Instruction-following after classification: the sequential schedule (demo suite, CPU).

Every run has the same classification phase: 300 steps of classification only (`data.mixing` sequential,
switch_step 300: r = 1 before, 0 after); then 0, 75 or 150 steps of instruction data only (train.steps =
300, 375, 450). Does the classification gain survive, and does the prompt-change failure shrink? Evaluated
on configs/paper/prompt_change.py's sets (training, paraphrased and inverted prompts). The learning-rate
schedule spans each run's steps, so the classification phases differ in their learning rates, not their data.

    python -m monitor_jax.main sweep --config=configs/paper/instruction_after.py
    python -m monitor_jax.main report --sweep=runs/instruction_after
"""
import runpy
from pathlib import Path

_here = Path(__file__).resolve().parent
_demo_config = runpy.run_path(str(_here.parent / "demo.py"))
_prompt_change_sets = runpy.run_path(str(_here / "prompt_change.py"))["prompt_change_sets"]
SWITCH_STEP = 300


def get_config():
    c = _demo_config["get_config"]()
    c.workdir = "runs/instruction_after"
    c.train.best_metric = ""
    c.data.mixing = {"kind": "sequential", "switch_step": SWITCH_STEP}
    c.train.steps = SWITCH_STEP
    c.eval.every = 75
    c.train.checkpoint_every = 75
    c.eval.tasks = _prompt_change_sets(_demo_config["research"])
    c.sweep.grid = (("train.steps", (SWITCH_STEP, SWITCH_STEP + 75, SWITCH_STEP + 150)),)
    return c
