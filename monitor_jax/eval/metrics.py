"""Monitor metrics from scores and labels, with bootstrap 95% intervals.

scikit-learn computes what it has (AUROC, average precision, ROC curve, Brier
score); expected calibration error and TPR at a fixed FPR are small float64
computations here.
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
from sklearn import metrics as skm

from monitor_jax.errors import MetricError  # noqa: F401  (re-exported for callers)


def _check(labels: np.ndarray, scores: np.ndarray, what: str = "") -> None:
    if len(labels) != len(scores):
        raise MetricError(f"{what}{len(labels)} labels but {len(scores)} scores")
    classes = set(np.unique(labels).tolist())
    if not classes <= {0, 1}:
        raise MetricError(f"{what}labels must be 0/1, got values {sorted(classes)}")
    if classes != {0, 1}:
        raise MetricError(f"{what}only class {classes.pop() if classes else '(none)'} is present among "
                          f"{len(labels)} rows; AUROC and TPR at fixed FPR need positives and negatives")


def tpr_at_fpr(labels: np.ndarray, scores: np.ndarray, max_fpr: float) -> float:
    """Highest TPR of a threshold whose FPR is at most `max_fpr` (an operating point, not interpolated)."""
    fpr, tpr, _ = skm.roc_curve(labels, scores)
    return float(tpr[fpr <= max_fpr + 1e-12].max())


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> float:
    """Σ_bins |bin| / n · |mean(label) − mean(prob)| over equal-width probability bins."""
    labels, probs = np.asarray(labels, np.float64), np.asarray(probs, np.float64)
    which = np.minimum((probs * bins).astype(int), bins - 1)
    ece = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            ece += in_bin.mean() * abs(labels[in_bin].mean() - probs[in_bin].mean())
    return float(ece)


def best_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The score threshold that maximises accuracy (predict positive when score > threshold)."""
    cands = np.unique(scores)
    cands = np.concatenate([[cands[0] - 1.0], (cands[:-1] + cands[1:]) / 2, [cands[-1] + 1.0]])
    acc = [np.mean((scores > c) == labels) for c in cands]
    return float(cands[int(np.argmax(acc))])


def binary_cross_entropy(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    """Mean cross-entropy of P(positive) `probs` against 0/1 `labels` (the eval loss)."""
    return float(-np.mean(labels * np.log(probs + eps) + (1 - labels) * np.log(1 - probs + eps)))


def point_metrics(labels: np.ndarray, scores: np.ndarray, probs: np.ndarray,
                  threshold: float | None = None) -> dict[str, float]:
    """Metrics of one set of rows. `scores` are log-odds; `probs` P(positive)."""
    labels = np.asarray(labels).astype(int)
    _check(labels, scores)
    out = dict(auroc=float(skm.roc_auc_score(labels, scores)),
               average_precision=float(skm.average_precision_score(labels, scores)),
               accuracy=float(np.mean((scores > 0) == labels)),
               tpr_at_1pct_fpr=tpr_at_fpr(labels, scores, 0.01),
               tpr_at_5pct_fpr=tpr_at_fpr(labels, scores, 0.05),
               brier=float(skm.brier_score_loss(labels, probs)),
               ece=expected_calibration_error(labels, probs))
    if threshold is not None:
        out["accuracy_calibrated"] = float(np.mean((scores > threshold) == labels))
    return out


def bootstrap(fn: Callable[[np.ndarray], Mapping[str, float]], n: int, samples: int = 1000,
              seed: int = 0) -> dict[str, tuple[float, float]]:
    """Percentile 95% intervals of fn(row indices) over resamples with replacement.

    Resamples that hold only one class are redrawn (they have no AUROC).
    """
    rng = np.random.default_rng(seed)
    values: dict[str, list[float]] = {}
    drawn = tries = 0
    while drawn < samples:
        tries += 1
        if tries > 20 * samples:
            raise MetricError("bootstrap: too few rows of one class to resample both classes")
        try:
            result = fn(rng.integers(0, n, n))
        except MetricError:
            continue
        for k, v in result.items():
            values.setdefault(k, []).append(v)
        drawn += 1
    return {k: (float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))) for k, v in values.items()}


def monitor_metrics(labels, scores, probs, calibration: tuple | None = None, samples: int = 1000,
                    seed: int = 0) -> dict[str, dict[str, float]]:
    """{metric: {"value", "low", "high"}}; `calibration` = (labels, scores) of the split the threshold is chosen on."""
    labels, scores, probs = np.asarray(labels).astype(int), np.asarray(scores, np.float64), np.asarray(probs, np.float64)
    threshold = None
    if calibration is not None:
        cal_labels, cal_scores = np.asarray(calibration[0]).astype(int), np.asarray(calibration[1], np.float64)
        _check(cal_labels, cal_scores, "calibration split: ")
        threshold = best_threshold(cal_labels, cal_scores)
    point = point_metrics(labels, scores, probs, threshold)
    intervals = bootstrap(lambda i: point_metrics(labels[i], scores[i], probs[i], threshold), len(labels),
                          samples, seed) if samples else {}
    out = {k: dict(value=v, low=intervals.get(k, (np.nan,))[0], high=intervals.get(k, (np.nan, np.nan))[1])
           for k, v in point.items()}
    if threshold is not None:
        out["threshold_calibrated"] = dict(value=threshold, low=np.nan, high=np.nan)
    return out
