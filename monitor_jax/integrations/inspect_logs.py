"""Inspect logs scored post hoc by a trained monitor: a copy of each log with the monitor's score on every
sample (`pip install -e '.[inspect]'`).

The score is an Inspect Score named `scorer_name` (default "monitor_jax") whose value is P(positive label) =
sigmoid(log-odds), the log-odds in its metadata, so ControlArena's analysis reads the copies unchanged:
`samples_df(paths)` has the column `score_monitor_jax`, and `compute_monitor_classification_metrics` and
`compute_safety` take `scorer_name="monitor_jax"`. The input logs are never modified.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from inspect_ai.log import read_eval_log, write_eval_log
from inspect_ai.scorer import Score

from monitor_jax.data.sources.agents import LOG_SUFFIXES, find_files, sample_transcript, sample_where, unreadable_log
from monitor_jax.errors import ConfigError, DataError
from monitor_jax.integrations.monitor import TrainedMonitor

SCORER = "monitor_jax"


def score_logs(monitor: TrainedMonitor, inputs: str | Sequence[str], output_dir: str,
               scorer_name: str = SCORER) -> dict[str, int]:
    """Score every sample of the logs `inputs` names and write the copies to `output_dir` (same file names);
    returns the counts."""
    out = Path(output_dir)
    paths = find_files(inputs, LOG_SUFFIXES, "Inspect logs")
    targets = [out / p.name for p in paths]
    if len(set(targets)) != len(targets):
        raise ConfigError(f"two input logs have the same file name; {output_dir} would hold one of them")
    for path, target in zip(paths, targets):
        if target.resolve() == path.resolve():
            raise ConfigError(f"--output={output_dir} would overwrite the input log {path}; write the copies "
                              f"elsewhere")
    counts = dict(logs=0, samples=0, truncated=0)
    out.mkdir(parents=True, exist_ok=True)
    for path, target in zip(paths, targets):
        try:
            log = read_eval_log(str(path))
        except Exception as e:       # inspect_ai raises ValueError, zipfile.BadZipFile, pydantic errors, ...
            raise unreadable_log(path, e) from None
        if not log.samples:
            raise DataError(f"{path}: the log holds no samples")
        wheres = [sample_where(path, s) for s in log.samples]
        texts = [sample_transcript(s, where, **monitor.render) for s, where in zip(log.samples, wheres)]
        for sample, verdict in zip(log.samples, monitor.score(texts, wheres)):
            sample.scores = dict(sample.scores or {})
            sample.scores[scorer_name] = Score(
                value=verdict.p_positive, explanation=f"log-odds {verdict.log_odds:.4f} ({monitor.description})",
                metadata=dict(log_odds=verdict.log_odds, truncated_tokens=verdict.truncated))
            counts["truncated"] += verdict.truncated > 0
        write_eval_log(log, str(target))
        counts["logs"] += 1
        counts["samples"] += len(log.samples)
    return counts
