"""Evaluation of configured tasks: encode once, score with the jitted scorer, compute metrics.

Held-out domains and prompt variants are the same thing here: a task (prompt)
over a source (rows). The mean AUROC over tasks marked `heldout` is the usual
selection metric for checkpoints.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from monitor_jax.data import tasks as task_registry
from monitor_jax.data.encode import ClassificationEncoder, Encoded
from monitor_jax.data.pipeline import open_rows
from monitor_jax.errors import NonFiniteError
from monitor_jax.eval.metrics import MetricError, monitor_metrics
from monitor_jax.eval.scoring import Scorer


@dataclasses.dataclass
class EvalSet:
    task: Any
    heldout: bool
    rows: list[dict]
    examples: list[Encoded]
    calibration: list[Encoded] | None = None   # rows the accuracy threshold is chosen on

    @property
    def labels(self) -> np.ndarray:
        return np.array([ex.label for ex in self.examples])

    @property
    def truncated(self) -> int:
        return sum(ex.truncated for ex in self.examples)


def _where(source, i: int) -> str:
    return source.describe(i) if hasattr(source, "describe") else f"row {i}"


class Evaluator:
    def __init__(self, sets: list[EvalSet], scorer: Scorer, bootstrap: int = 0):
        self.sets, self.scorer, self.bootstrap = sets, scorer, bootstrap

    @classmethod
    def from_config(cls, c, tokenizer, graphdef, mesh, bootstrap: int | None = None) -> "Evaluator":
        scorer = Scorer(graphdef, mesh, c.eval.batch_size, tuple(c.eval.buckets), tokenizer.pad_id)
        sets = []
        for item in c.eval.tasks:
            task = task_registry.get(item["task"])
            source = open_rows(item["source"])
            n = len(source) if not c.eval.max_rows else min(len(source), c.eval.max_rows)
            enc = ClassificationEncoder(task, tokenizer, scorer.max_length)
            rows = [source[i] for i in range(n)]
            examples = [enc(row, _where(source, i)) for i, row in enumerate(rows)]
            calibration = None
            if item.get("calibration"):
                cal = open_rows(item["calibration"])
                calibration = [enc(cal[i], _where(cal, i)) for i in range(len(cal))]
            sets.append(EvalSet(task, bool(item.get("heldout", False)), rows, examples, calibration))
        return cls(sets, scorer, c.eval.bootstrap if bootstrap is None else bootstrap)

    def run(self, params, step: int = 0, bootstrap: int | None = None) -> dict[str, Any]:
        """{"tasks": [per-task dict with metrics and scores], "flat": {"eval/...": float}}."""
        samples = 0 if bootstrap is None else bootstrap
        out, flat, heldout = [], {}, []
        for s in self.sets:
            scored = self.scorer.score_all(params, s.examples)
            log_odds = np.array([x.log_odds for x in scored])
            probs = np.array([x.p_positive for x in scored])
            bad = np.flatnonzero(~np.isfinite(log_odds))
            if bad.size:
                row = s.rows[bad[0]]
                raise NonFiniteError(f"eval task {s.task.name}: {bad.size} of {len(log_odds)} scores are not finite "
                                     f"(first: row {bad[0]}, id {row.get('id', bad[0])!r}, score "
                                     f"{log_odds[bad[0]]}); the parameters or the inputs are broken")
            labels = s.labels
            eps = 1e-7
            loss = float(-np.mean(labels * np.log(probs + eps) + (1 - labels) * np.log(1 - probs + eps)))
            calibration = None
            if s.calibration:
                cal = self.scorer.score_all(params, s.calibration)
                calibration = (np.array([ex.label for ex in s.calibration]), np.array([x.log_odds for x in cal]))
            try:
                metrics = monitor_metrics(labels, log_odds, probs, calibration=calibration, samples=samples,
                                          seed=step)
            except MetricError as e:
                raise MetricError(f"eval task {s.task.name}: {e}") from None
            out.append(dict(task=s.task.name, domain=s.task.domain, heldout=s.heldout, n=len(labels),
                            truncated=s.truncated, truncated_tokens=[ex.truncated_tokens for ex in s.examples],
                            loss=loss, metrics=metrics, log_odds=log_odds, p_positive=probs,
                            labels=labels, ids=[r.get("id", i) for i, r in enumerate(s.rows)]))
            flat[f"eval/{s.task.name}/auroc"] = metrics["auroc"]["value"]
            flat[f"eval/{s.task.name}/loss"] = loss
            flat[f"eval/{s.task.name}/truncated"] = s.truncated
            if s.heldout:
                heldout.append(metrics["auroc"]["value"])
        flat["eval/mean_auroc"] = float(np.mean([t["metrics"]["auroc"]["value"] for t in out]))
        if heldout:
            flat["eval/mean_heldout_auroc"] = float(np.mean(heldout))
        return dict(step=step, tasks=out, flat=flat)
