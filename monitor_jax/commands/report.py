"""`report --sweep=DIR`: a sweep's results (no --config): results.csv, results.md and figures in DIR/results/.

One row per (run, eval set) from each run's final evaluation: the run's grid values as columns, AUROC, TPR at
1% FPR and accuracy with their bootstrap intervals. Figures: AUROC against each numeric grid key per eval set
(interval bands), a heatmap of training setting x eval set, and the training curves (total, per-task
classification and instruction loss). Each run's overrides and mean AUROC also go to its TensorBoard
directory (HParams), so `tensorboard --logdir DIR/runs` shows the runs side by side. summary.md/.csv: per eval
set, each setting's mean AUROC over seeds beside each seed's value, next to the base model's zero-shot AUROC
when DIR holds it (`eval --config=THE SWEEP'S CONFIG --config.workdir=DIR` writes DIR/eval/base/), and each
setting's change from zero-shot on the same rows with a paired bootstrap interval.

    report --sweep=DIR --paired=train.steps:375:300     # or the sweep's own sweep.paired

adds paired.csv and paired.md: per seed, AUROC with the grid key at the treatment minus at the baseline on the
same rows, the mean over seeds and a paired bootstrap interval (studies/results.py: paired_auroc_difference).
"""
from __future__ import annotations

from pathlib import Path

from monitor_jax.errors import EXIT_OK, ConfigError
from monitor_jax.studies.results import report


def run(config, flags) -> int:
    if not flags.sweep:
        raise ConfigError("report needs --sweep=DIR (a sweep's work directory, holding sweep.json)")
    sweep_dir = Path(flags.sweep)
    if not (sweep_dir / "sweep.json").is_file():
        raise ConfigError(f"--sweep={flags.sweep}: no sweep.json there; give the work directory of a sweep")
    specs = []
    for spec in getattr(flags, "paired", None) or []:
        parts = spec.rsplit(":", 2)
        if len(parts) != 3 or not all(parts):
            raise ConfigError(f"--paired={spec!r}: expected KEY:TREATMENT:BASELINE (a grid key and two of its "
                              f"values as the report labels them)")
        specs.append(tuple(parts))
    out, rows, notes = report(sweep_dir, specs)
    print((out / "results.md").read_text())
    print((out / "summary.md").read_text())
    if (out / "paired.md").is_file():             # written by this report (a stale one is removed)
        print((out / "paired.md").read_text())
    print(f"{len(rows)} rows; results and figures in {out}")
    return EXIT_OK
