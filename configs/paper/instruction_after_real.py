"""Instruction-following after classification on the real SmolLM2-135M-Instruct: configs/paper/
instruction_after.py's sequential schedule (classification only for the first 48 steps, instruction only
after) with 0, 16 or 32 instruction steps (train.steps 48, 64, 80), two seeds, configs/real_study.py's LoRA
settings; evaluated on the prompt-change sets (training, paraphrased and inverted prompts). Unlike the demo
config, the learning rate is constant after warmup, so every arm of a seed has the very same classification
phase (same rows, same updates): the paired difference is the instruction steps' alone.

Budget (this 2-core CPU): 384 steps of about 6 s and six evaluations of about 2.5 minutes: about 55 minutes.
Measured there (2026-12-03/04, docs/studies.md): sweep 51 min 35 s.

    python -m monitor_jax.main eval --config=configs/paper/instruction_after_real.py      # the zero-shot row
    python -m monitor_jax.main sweep --config=configs/paper/instruction_after_real.py
    python -m monitor_jax.main report --sweep=runs/instruction_after_real      # paired: 64 - 48, 80 - 48

The claim: instruction data after classification keeps the gain and repairs the prompt-change failure (the
inverted sets move back towards or above 0.5). sweep.paired reports each arm minus classification only.
"""
import runpy
from pathlib import Path

_here = Path(__file__).resolve().parent
_study = runpy.run_path(str(_here.parent / "real_study.py"))
_paper = runpy.run_path(str(_here / "instruction_after.py"))

SWITCH_STEP = 48


def get_config():
    c = _study["real"](_paper["get_config"](), "runs/instruction_after_real", steps=SWITCH_STEP)
    c.optim.decay = "constant"
    c.data.mixing = {"kind": "sequential", "switch_step": SWITCH_STEP}
    c.sweep.grid = (("train.steps", (SWITCH_STEP, SWITCH_STEP + 16, SWITCH_STEP + 32)),)
    c.sweep.paired = (("train.steps", str(SWITCH_STEP + 16), str(SWITCH_STEP)),
                      ("train.steps", str(SWITCH_STEP + 32), str(SWITCH_STEP)))
    return c
