"""Monitor metrics from scores and labels, with bootstrap 95% intervals.

scikit-learn computes the point estimates it has (AUROC, average precision, ROC curve, Brier score); expected
calibration error and TPR at a fixed FPR are small float64 computations here. The bootstrap computes the same
metrics for every resample at once from per-row resample counts (`resampled_metrics`): calling scikit-learn
once per resample spent ~95% of an evaluation's time in its input validation (1900 rows x 200 resamples: 2.8 s
per set, 0.18 s now). tests/test_metrics.py checks each resample's values against `point_metrics` on the
resampled rows.
"""
from __future__ import annotations

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
    # Every threshold is an operating point: drop_intermediate would drop those on a straight stretch of the
    # curve, and with them possibly the best one under max_fpr.
    fpr, tpr, _ = skm.roc_curve(labels, scores, drop_intermediate=False)
    return float(tpr[fpr <= max_fpr + 1e-12].max())


ECE_BINS = 10


def calibration_bin(probs: np.ndarray, bins: int = ECE_BINS) -> np.ndarray:
    """Each probability's equal-width bin, 0..bins-1 (1.0 falls in the last)."""
    return np.minimum((np.asarray(probs) * bins).astype(int), bins - 1)


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> float:
    """Σ_bins |bin| / n · |mean(label) − mean(prob)| over equal-width probability bins."""
    labels, probs = np.asarray(labels, np.float64), np.asarray(probs, np.float64)
    which = calibration_bin(probs, bins)
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


def resamples(labels: np.ndarray, samples: int, seed: int = 0) -> np.ndarray:
    """[samples, n] row indices drawn with replacement, each holding both classes (a resample with one class
    has no AUROC: it is redrawn)."""
    rng, n = np.random.default_rng(seed), len(labels)
    drawn, tries = [], 0
    while len(drawn) < samples:
        tries += 1
        if tries > 20 * samples:
            raise MetricError("bootstrap: too few rows of one class to resample both classes")
        idx = rng.integers(0, n, n)
        if 0 < labels[idx].sum() < n:
            drawn.append(idx)
    return np.asarray(drawn, np.int64).reshape(samples, n)


def _counts(group_of_row: np.ndarray, groups: int, idx: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """[resamples, groups]: per resample, how many of its rows (or their summed `weights`) fall in each group."""
    flat = (np.arange(len(idx))[:, None] * groups + group_of_row[idx]).ravel()
    w = None if weights is None else weights[idx].ravel()
    return np.bincount(flat, weights=w, minlength=len(idx) * groups).reshape(len(idx), groups).astype(np.float64)


def resampled_metrics(labels: np.ndarray, scores: np.ndarray, probs: np.ndarray, idx: np.ndarray,
                      threshold: float | None = None) -> dict[str, np.ndarray]:
    """`point_metrics` of every resample `idx` [samples, n] at once: {metric: [samples]}.

    Rows are grouped by distinct score (descending); per resample, the positive and negative counts of each
    group give the ROC points at every threshold (the points scikit-learn's curves hold), hence AUROC
    (trapezoids), average precision (the precision at each threshold times the recall it adds) and TPR at FPR.
    """
    labels = np.asarray(labels).astype(int)
    scores, probs = np.asarray(scores, np.float64), np.asarray(probs, np.float64)
    y, n = labels.astype(np.float64), len(labels)
    distinct, inverse = np.unique(-scores, return_inverse=True)     # group 0 holds the highest score
    total = _counts(inverse, len(distinct), idx)
    pos = _counts(inverse, len(distinct), idx, y)
    tp, fp = np.cumsum(pos, axis=1), np.cumsum(total - pos, axis=1)
    n_pos, n_neg = tp[:, -1:], fp[:, -1:]
    tpr = np.concatenate([np.zeros_like(n_pos), tp / n_pos], axis=1)
    fpr = np.concatenate([np.zeros_like(n_neg), fp / n_neg], axis=1)
    called = tp + fp
    precision = np.divide(tp, called, out=np.zeros_like(tp), where=called > 0)
    correct = ((scores > 0) == labels).astype(np.float64)
    which = calibration_bin(probs)
    out = dict(auroc=np.sum(np.diff(fpr, axis=1) * (tpr[:, 1:] + tpr[:, :-1]) / 2, axis=1),
               average_precision=np.sum(pos / n_pos * precision, axis=1),
               accuracy=correct[idx].mean(axis=1),
               tpr_at_1pct_fpr=np.where(fpr <= 0.01 + 1e-12, tpr, 0.0).max(axis=1),
               tpr_at_5pct_fpr=np.where(fpr <= 0.05 + 1e-12, tpr, 0.0).max(axis=1),
               brier=((probs - y) ** 2)[idx].mean(axis=1),
               # per bin, |sum of labels - sum of probs| / n = the bin's share of rows x |mean label - mean prob|
               ece=np.abs(_counts(which, ECE_BINS, idx, y) - _counts(which, ECE_BINS, idx, probs)).sum(axis=1) / n)
    if threshold is not None:
        out["accuracy_calibrated"] = ((scores > threshold) == labels).astype(np.float64)[idx].mean(axis=1)
    return out


def resampled_in_chunks(labels: np.ndarray, scores: np.ndarray, probs: np.ndarray, idx: np.ndarray,
                        threshold: float | None = None) -> dict[str, np.ndarray]:
    """`resampled_metrics` over every resample of `idx`, in chunks of resamples that keep each [chunk, distinct
    scores] array near 2M values (16 MB)."""
    chunk = max(1, min(100, 2_000_000 // len(labels)))
    chunks: dict[str, list[np.ndarray]] = {}
    for lo in range(0, len(idx), chunk):
        for k, v in resampled_metrics(labels, scores, probs, idx[lo:lo + chunk], threshold).items():
            chunks.setdefault(k, []).append(v)
    return {k: np.concatenate(v) for k, v in chunks.items()}


def bootstrap(labels: np.ndarray, scores: np.ndarray, probs: np.ndarray, threshold: float | None = None,
              samples: int = 1000, seed: int = 0) -> dict[str, tuple[float, float]]:
    """Percentile 95% intervals of every metric over `samples` resamples with replacement."""
    idx = resamples(np.asarray(labels).astype(int), samples, seed)
    low_high = {k: np.percentile(v, [2.5, 97.5])
                for k, v in resampled_in_chunks(labels, scores, probs, idx, threshold).items()}
    return {k: (float(lo), float(hi)) for k, (lo, hi) in low_high.items()}


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
    intervals = bootstrap(labels, scores, probs, threshold, samples, seed) if samples else {}
    out = {k: dict(value=v, low=intervals.get(k, (np.nan,))[0], high=intervals.get(k, (np.nan, np.nan))[1])
           for k, v in point.items()}
    if threshold is not None:
        out["threshold_calibrated"] = dict(value=threshold, low=np.nan, high=np.nan)
    return out
