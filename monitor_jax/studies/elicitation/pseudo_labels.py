"""Pseudo-labels from thinking predictions: the sign of the log-odds, optionally only the most confident rows.

`keep_quantile` q drops the least confident share: a row is kept when |log-odds| >= the q-quantile of
|log-odds| over all rows (q = 0 keeps every row). A log-odds of exactly 0 decides nothing and is dropped
(counted as undecided), never guessed. Training on one class teaches nothing but a constant, so a filter
that leaves one class empty is an error naming the counts.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from monitor_jax.data.tasks import ClassificationTask
from monitor_jax.errors import DataError


@dataclasses.dataclass
class PseudoLabels:
    label: np.ndarray      # [N] 1 positive, 0 negative (meaningful where keep)
    keep: np.ndarray       # [N] bool: the rows trained on
    threshold: float       # the |log-odds| a kept row reaches

    def summary(self) -> dict[str, Any]:
        """The class balance before and after the confidence filter."""
        decided = self.label >= 0
        kept_pos = int(np.sum(self.keep & (self.label == 1)))
        return dict(rows=int(self.label.size), kept=int(self.keep.sum()), positive=kept_pos,
                    negative=int(self.keep.sum()) - kept_pos, positive_share=kept_pos / max(int(self.keep.sum()), 1),
                    positive_before_filter=int(np.sum(decided & (self.label == 1))),
                    negative_before_filter=int(np.sum(decided & (self.label == 0))),
                    undecided=int(np.sum(~decided)), threshold=self.threshold)


def pseudo_labels(log_odds: np.ndarray, keep_quantile: float = 0.0) -> PseudoLabels:
    log_odds = np.asarray(log_odds, np.float64)
    if not 0.0 <= keep_quantile < 1.0:
        raise ValueError(f"keep_quantile={keep_quantile} must be in [0, 1)")
    if log_odds.size == 0:
        raise DataError("no predictions to pseudo-label")
    if not np.isfinite(log_odds).all():
        raise DataError(f"{int(np.sum(~np.isfinite(log_odds)))} predictions are not finite")
    label = np.where(log_odds > 0, 1, np.where(log_odds < 0, 0, -1)).astype(np.int8)
    confidence = np.abs(log_odds)
    threshold = float(np.quantile(confidence, keep_quantile)) if keep_quantile > 0 else 0.0
    keep = (confidence >= threshold) & (label >= 0)
    out = PseudoLabels(label, keep, threshold)
    s = out.summary()
    if s["positive"] == 0 or s["negative"] == 0:
        raise DataError(f"pseudo-labels: {s['positive']} positive and {s['negative']} negative rows kept of "
                        f"{s['rows']} (before the confidence filter {s['positive_before_filter']} positive, "
                        f"{s['negative_before_filter']} negative, {s['undecided']} undecided): one class is empty, "
                        f"so single-token training would learn a constant; the starting model's thinking "
                        f"predictions do not separate this source (lower elicit.keep_quantile, or change the "
                        f"thinking prompt or the starting model)")
    return out


def label_value(task: ClassificationTask, positive: bool) -> Any:
    """The row value the task reads as `positive` (its first such entry in `task.labels`)."""
    for value, is_positive in task.labels:
        if is_positive == positive:
            return value
    raise DataError(f"task {task.name} has no row value for {'positive' if positive else 'negative'} labels")


def labelled_rows(rows: Sequence[Mapping[str, Any]], labels: np.ndarray, keep: np.ndarray,
                  task: ClassificationTask) -> list[dict[str, Any]]:
    """The kept rows, each with `task.label_field` set to its (pseudo-)label in the task's own values."""
    values = {1: label_value(task, True), 0: label_value(task, False)}
    return [{**row, task.label_field: values[int(labels[i])]} for i, row in enumerate(rows) if keep[i]]
