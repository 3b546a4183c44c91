"""What an evaluation returns: one typed result per eval set, and the run's (its sets and flat metrics).

Every reader takes these: the report (eval/report.py), the trainer's logged and best-checkpoint metrics
(`EvalResult.flat`), the train command's before/after table, a sweep's results (studies/results.py) and the
elicitation comparison (studies/elicitation/compare.py). The last two read report.json back from disk:
`EvalResult.from_json` is the inverse of `to_json` (report.json's `step`, `tasks` and `summary`), without the
per-row scores, which scores.jsonl holds.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Mapping

import numpy as np


def finite_or_null(x: Any) -> Any:
    """JSON has no NaN: a value that is undefined (an interval without bootstrap) is written as null."""
    if isinstance(x, Mapping):
        return {k: finite_or_null(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite_or_null(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if np.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def _nan_if_null(x: Any) -> float:
    return float("nan") if x is None else x


@dataclasses.dataclass(frozen=True)
class Interval:
    """A metric's value and its bootstrap 95% interval (NaN bounds: no bootstrap)."""
    value: float
    low: float = float("nan")
    high: float = float("nan")

    @property
    def has_interval(self) -> bool:
        return bool(np.isfinite(self.low))

    def to_json(self) -> dict[str, float | None]:
        return finite_or_null(dict(value=self.value, low=self.low, high=self.high))

    def cell(self) -> str:
        """'0.812 [0.750, 0.870]' (the value alone without an interval): a report's table cell."""
        return f"{self.value:.3f}" + (f" [{self.low:.3f}, {self.high:.3f}]" if self.has_interval else "")

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Interval":
        return cls(*(_nan_if_null(d[k]) for k in ("value", "low", "high")))


@dataclasses.dataclass
class RowScores:
    """Per row, in row order: what scores.jsonl holds. `extras`: a mode's own per-row fields (a thinking set's
    reasoning and free-text answer, a summarization set's summary), by their scores.jsonl names."""
    ids: list
    labels: np.ndarray
    log_odds: np.ndarray
    p_positive: np.ndarray
    truncated_tokens: list[int]
    extras: dict[str, list] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class SetResult:
    """One eval set's result. `extras`: the mode's own report fields (report.json, e.g. a thinking set's
    `thinking` summary, a summarization set's `judge`); `extra_metrics`: its scalar metrics beside AUROC,
    loss and label mass (logged as eval/NAME/KEY); `scores`: per-row scores (None when read from report.json)."""
    name: str
    task: str
    domain: str
    heldout: bool
    mode: str
    prompt: str                 # the task's messages as one line ("role: text / ...")
    positive: str               # the label strings that were scored (a summarization set's: its judge task's)
    negative: str
    n: int
    truncated: int              # rows whose content was shortened to fit
    label_mass: float           # mean P(positive) + P(negative) over the vocabulary at the answer position
    loss: float                 # binary cross-entropy of P(positive) over the two labels
    metrics: dict[str, Interval]
    # The length-only baseline: AUROC of each row's prompt length in tokens (before any cut), longer = positive.
    # Far from 0.5 either way, length alone separates the set (below 0.5: shorter rows are the positives).
    length_auroc: float = float("nan")
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)
    extra_metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    scores: RowScores | None = None

    @property
    def auroc(self) -> Interval:
        return self.metrics["auroc"]

    def flat(self) -> dict[str, float]:
        """eval/NAME/... metrics (logged, and what train.best_metric names)."""
        out = {f"eval/{self.name}/auroc": self.auroc.value, f"eval/{self.name}/loss": self.loss,
               f"eval/{self.name}/label_mass": self.label_mass, f"eval/{self.name}/truncated": self.truncated}
        return out | {f"eval/{self.name}/{k}": v for k, v in self.extra_metrics.items()}

    def rows(self) -> Iterator[dict[str, Any]]:
        """scores.jsonl's lines for this set."""
        s = self.scores
        for i, rid in enumerate(s.ids):
            yield dict(id=rid, name=self.name, task=self.task, label=int(s.labels[i]), score=float(s.log_odds[i]),
                       p_positive=float(s.p_positive[i]), truncated=int(s.truncated_tokens[i]),
                       **{k: v[i] for k, v in s.extras.items()})

    def to_json(self) -> dict[str, Any]:
        """report.json's entry for this set."""
        out = {k: getattr(self, k) for k in _JSON_FIELDS}
        out["metrics"] = {k: m.to_json() for k, m in self.metrics.items()}
        return finite_or_null({**out, **self.extras})

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "SetResult":
        """A report.json entry; the fields an older or hand-written report lacks take `_UNKNOWN`'s values
        (name, domain, heldout, n and metrics are required)."""
        full = {**_UNKNOWN, **{k: v for k, v in d.items() if v is not None or k not in _UNKNOWN}}
        return cls(**{k: full[k] for k in _JSON_FIELDS if k != "metrics"},
                   metrics={k: Interval.from_json(m) for k, m in d["metrics"].items()},
                   extras={k: v for k, v in d.items() if k not in _JSON_FIELDS})


# report.json's fields of a set, in its order (then the mode's extras)
_JSON_FIELDS = ("name", "task", "domain", "heldout", "mode", "prompt", "positive", "negative", "n", "truncated",
                "label_mass", "loss", "length_auroc", "metrics")
_UNKNOWN = dict(task="", mode="", prompt="", positive="", negative="", truncated=0, label_mass=float("nan"),
                loss=float("nan"), length_auroc=float("nan"))


@dataclasses.dataclass
class EvalResult:
    """One evaluation: each set's result, and the flat metrics (eval/NAME/..., eval/mean_auroc,
    eval/mean_heldout_auroc when a set is held out)."""
    step: int
    sets: list[SetResult]
    flat: dict[str, float]

    @classmethod
    def of(cls, step: int, sets: list[SetResult]) -> "EvalResult":
        flat = {k: v for s in sets for k, v in s.flat().items()}
        flat["eval/mean_auroc"] = float(np.mean([s.auroc.value for s in sets]))
        heldout = [s.auroc.value for s in sets if s.heldout]
        if heldout:
            flat["eval/mean_heldout_auroc"] = float(np.mean(heldout))
        return cls(step, sets, flat)

    def by_name(self) -> dict[str, SetResult]:
        return {s.name: s for s in self.sets}

    def to_json(self) -> dict[str, Any]:
        return dict(step=self.step, tasks=[s.to_json() for s in self.sets], summary=finite_or_null(self.flat))

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "EvalResult":
        """A report.json read back (its title and source are the report's, not the evaluation's)."""
        return cls(d.get("step", 0), [SetResult.from_json(t) for t in d["tasks"]], dict(d.get("summary", {})))
