"""Transfer to thinking and to summarization on the real SmolLM2-135M-Instruct, demo suite, CPU, ~25 minutes.

configs/demo_real.py's single-token training (chemistry and cyber requests, instruction data mixed in, 100
steps), evaluated before and after on three domains, each single-token and thinking (the model reasons up
to 96 tokens, then is scored after "Answer:"), and the agent domain by summarization (the model summarizes
each transcript; the base model judges the summary alone). 128 rows per set.

    pip install -e '.[real]' && python -m monitor_jax.main train --config=configs/paper/thinking_real.py

Figures: docs/benchmarks.md ("Thinking and summarization transfer").
"""
import runpy
from pathlib import Path

_real = runpy.run_path(str(Path(__file__).resolve().parents[1] / "demo_real.py"))


def get_config():
    c = _real["get_config"]()
    demo = _real["research"]
    c.workdir = "runs/thinking_real"
    n = 128
    items = []
    for domain, heldout in (("chem_harm", False), ("control_arena", True), ("imdb", True)):
        items.append({"task": domain, "source": demo(domain, "test", n), "heldout": heldout})
        items.append({"task": f"{domain}_thinking", "source": demo(domain, "test", n), "heldout": heldout,
                      "mode": "thinking", "max_thinking_tokens": 96})
    items.append({"task": "control_arena_summary", "source": demo("control_arena", "test", n), "heldout": True,
                  "mode": "summarize", "max_summary_tokens": 96, "judge_task": "control_arena_summary_judge",
                  "judge": "base"})
    c.eval.tasks = items
    c.eval.buckets = (80, 112, 144, 256)
    return c
