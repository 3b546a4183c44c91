"""Instruction-following after classification on the real SmolLM2-135M-Instruct: configs/paper/
instruction_after.py's sequential schedule (classification only for the first 40 steps, instruction only
after) with 0, 10 or 20 instruction steps (train.steps 40, 50, 60), two seeds, configs/real_study.py's LoRA
settings; evaluated on the prompt-change sets (training, paraphrased and inverted prompts).

Budget (this 2-core CPU): 300 steps of about 10 s and six evaluations: about 70 minutes.

    python -m monitor_jax.main eval --config=configs/paper/instruction_after_real.py      # the zero-shot row
    python -m monitor_jax.main sweep --config=configs/paper/instruction_after_real.py
    python -m monitor_jax.main report --sweep=runs/instruction_after_real      # paired: 50 - 40, 60 - 40

The claim: instruction data after classification keeps the gain and repairs the prompt-change failure (the
inverted sets move back towards or above 0.5). sweep.paired reports each arm minus classification only.
"""
import runpy
from pathlib import Path

_here = Path(__file__).resolve().parent
_study = runpy.run_path(str(_here.parent / "real_study.py"))
_paper = runpy.run_path(str(_here / "instruction_after.py"))

SWITCH_STEP = 40


def get_config():
    c = _study["real"](_paper["get_config"](), "runs/instruction_after_real", steps=SWITCH_STEP)
    c.data.mixing = {"kind": "sequential", "switch_step": SWITCH_STEP}
    c.sweep.grid = (("train.steps", (SWITCH_STEP, SWITCH_STEP + 10, SWITCH_STEP + 20)),)
    c.sweep.paired = (("train.steps", str(SWITCH_STEP + 10), str(SWITCH_STEP)),
                      ("train.steps", str(SWITCH_STEP + 20), str(SWITCH_STEP)))
    return c
