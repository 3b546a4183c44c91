"""Unsupervised elicitation, in miniature: the demo suite, a tiny random-init model, about a CPU minute.

The starting model reasons (up to 24 tokens) on 192 agent transcripts whose labels are removed as they are
read; the sign of its log-odds after "Answer:" labels them; configs/demo.py's model then trains single-token
on those pseudo-labels (and, for comparison, on the same rows' true labels), and the report compares
zero-shot single-token, zero-shot thinking, elicited and supervised AUROC on the agent, chemistry and
sentiment test sets. A random-init model's reasoning is noise: this config checks the mechanics; the
research question needs a pretrained starting model (configs/paper/elicitation_real.py).

    python -m monitor_jax.main elicit --config=configs/paper/elicitation_demo.py

Stages and their files: monitor_jax/studies/elicitation/pipeline.py. Rerun to skip what is done; --stage=NAME reruns one.
"""
import runpy
from pathlib import Path

_demo_config = runpy.run_path(str(Path(__file__).resolve().parents[1] / "demo.py"))


def elicitation(c, demo, rows, thinking_tokens, eval_rows, steps):
    """Pseudo-label `rows` unlabeled agent transcripts, train `steps` steps on them, compare on three domains."""
    c.data.classification = []          # elicit trains elicit.task on the pseudo-labels
    c.data.instruction = {}
    c.data.mixing = {"kind": "constant", "value": 1.0}
    c.elicit.source = demo("control_arena", "train", rows)
    c.elicit.thinking_task = "control_arena_thinking"
    c.elicit.task = "control_arena"
    c.elicit.max_thinking_tokens = thinking_tokens
    c.train.steps = c.train.checkpoint_every = steps
    c.train.best_metric = ""
    c.eval.every = 0
    items = []
    for domain, heldout in (("control_arena", False), ("chem_harm", True), ("imdb", True)):
        items.append({"task": domain, "source": demo(domain, "test", eval_rows), "heldout": heldout})
        items.append({"task": f"{domain}_thinking", "source": demo(domain, "test", eval_rows), "heldout": heldout,
                      "mode": "thinking", "max_thinking_tokens": thinking_tokens})
    c.eval.tasks = items
    return c


def get_config():
    c = _demo_config["get_config"]()
    c.workdir = "runs/elicitation_demo"
    c.eval.buckets = (64, 128, 256)
    return elicitation(c, _demo_config["research"], rows=192, thinking_tokens=24, eval_rows=64, steps=60)
