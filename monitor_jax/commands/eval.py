"""`eval`: score every configured eval set with `--checkpoint`'s parameters; write the report."""
from __future__ import annotations

from pathlib import Path

import jax

from monitor_jax import assemble
from monitor_jax.config import validate
from monitor_jax.errors import EXIT_OK, ConfigError
from monitor_jax.eval.report import write_report


def run(config, flags=None) -> int:
    """report.json/.md, roc.png and scores.jsonl under WORKDIR/eval/STEP (or base, or the HF directory's name)."""
    validate(config, jax.device_count(), training=False)
    if not config.eval.tasks:
        raise ConfigError("eval.tasks is empty: nothing to evaluate")
    rt = assemble.runtime(config, getattr(flags, "checkpoint", "") if flags else "")
    evaluator = assemble.evaluator(rt)
    with jax.set_mesh(rt.mesh):
        result = evaluator.run(rt.params, step=rt.step or 0)
    if rt.step is not None:
        name, title = str(rt.step), f"checkpoint step {rt.step}"
    else:
        name = "base" if rt.description.startswith("base") else Path(rt.description).name
        title = rt.description
    out = write_report(result, Path(config.workdir) / "eval" / name, title=title, source=rt.description)
    if jax.process_index() == 0:
        print((out / "report.md").read_text())
        print(f"report written to {out}")
    return EXIT_OK
