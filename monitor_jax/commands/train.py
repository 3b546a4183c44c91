"""`train`: train or resume the run a config describes; print the before/after AUROC table."""
from __future__ import annotations

from pathlib import Path

import jax

from monitor_jax.errors import EXIT_OK, EXIT_PREEMPTED
from monitor_jax.eval.results import EvalResult
from monitor_jax.runs import train_run as train   # noqa: F401  (tests and notebooks call commands.train.train)


def _table(before: EvalResult | None, after: EvalResult | None) -> str:
    """Per eval set: AUROC, eval loss and label mass (P(positive) + P(negative)) before and after training."""
    rows = ["| eval set | domain | held out | n | AUROC before | AUROC after | eval loss before | eval loss after | "
            "label mass before | label mass after |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    after_by = after.by_name() if after else {}
    values = lambda x: (x.auroc.value, x.loss, x.label_mass) if x else (None, None, None)  # noqa: E731
    for s in (before or after).sets:
        b, a = values(s if before else None), values(after_by.get(s.name))
        cells = [f"{v:.3f}" if v is not None else "-" for pair in zip(b, a) for v in pair]
        rows.append(f"| {s.name} | {s.domain} | {'yes' if s.heldout else 'no'} | {s.n} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def run(config, flags=None) -> int:
    """EXIT_PREEMPTED after a SIGTERM/SIGINT save, so orchestrators restart the run."""
    result = train(config)
    if jax.process_index() == 0:
        print(f"\n{result.status} at step {result.step}; work directory {config.workdir}")
        if result.status == "preempted":
            print(f"run the same command again to resume from step {result.step} (exit code {EXIT_PREEMPTED})")
        if result.eval_before or result.eval_after:
            print(_table(result.eval_before, result.eval_after))
            print(f"reports (report.md, roc.png, scores.jsonl) per evaluated step in {Path(config.workdir) / 'eval'}")
    return EXIT_PREEMPTED if result.status == "preempted" else EXIT_OK
