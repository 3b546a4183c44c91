"""The prompt change inside a trained domain (demo suite, CPU).

Classification-only training (r = 1) on chem_harm and cyber_harm, then each trained domain is evaluated under
its training prompt, a paraphrase (the same question in other words) and an inverted prompt (the question
reversed: "Yes" now means safe, data/research.py); the held-out agent domain likewise. A monitor that
follows the prompt scores the inverted sets above 0.5; one that applies the trained rule scores them below.
Two seeds, since a single run says little about a failure rate.

    python -m monitor_jax.main sweep --config=configs/paper/prompt_change.py
    python -m monitor_jax.main report --sweep=runs/prompt_change

configs/paper/instruction_mixed.py and instruction_after.py repeat these evaluations with instruction data.
"""
import runpy
from pathlib import Path

_demo_config = runpy.run_path(str(Path(__file__).resolve().parents[1] / "demo.py"))


def prompt_change_sets(research, rows: int = 300) -> list:
    """Each of chem_harm, cyber_harm (trained) and control_arena (held out) under its three prompts."""
    items = []
    for domain, heldout in (("chem_harm", False), ("cyber_harm", False), ("control_arena", True)):
        for variant in ("", "_paraphrased", "_inverted"):
            items.append({"task": domain + variant, "source": research(domain, "test", rows), "heldout": heldout})
    return items


def get_config():
    c = _demo_config["get_config"]()
    research = _demo_config["research"]
    c.workdir = "runs/prompt_change"
    c.train.best_metric = ""
    c.data.instruction = {}
    c.data.mixing = {"kind": "constant", "value": 1.0}
    c.eval.tasks = prompt_change_sets(research)
    c.sweep.seeds = (0, 1)
    return c
