"""Metrics against scikit-learn and float64 references; degenerate inputs are clear errors."""
import numpy as np
import pytest
from sklearn import metrics as skm

from monitor_jax.eval.metrics import (MetricError, best_threshold, bootstrap, expected_calibration_error,
                                      monitor_metrics, point_metrics, resampled_metrics, resamples, tpr_at_fpr)


def _data(kind, seed=0, n=400):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    scores = rng.normal(size=n) + 1.2 * labels
    if kind == "ties":
        scores = np.round(scores * 2) / 2  # many exact ties
    return labels, scores, 1 / (1 + np.exp(-scores))


def _tpr_at_fpr_reference(labels, scores, max_fpr):
    """Brute force over every threshold, float64."""
    best = 0.0
    for t in np.concatenate([[np.inf], np.unique(scores)]):
        pred = scores >= t
        fpr = np.sum(pred & (labels == 0)) / np.sum(labels == 0)
        tpr = np.sum(pred & (labels == 1)) / np.sum(labels == 1)
        if fpr <= max_fpr:
            best = max(best, tpr)
    return best


def _ece_reference(labels, probs, bins=10):
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (probs >= lo) & ((probs < hi) if hi < 1 else (probs <= hi))
        if sel.any():
            total += sel.sum() / len(probs) * abs(labels[sel].mean() - probs[sel].mean())
    return total


@pytest.mark.parametrize("kind", ["random", "ties"])
def test_point_metrics_match_references(kind):
    labels, scores, probs = _data(kind)
    m = point_metrics(labels, scores, probs)
    assert m["auroc"] == pytest.approx(skm.roc_auc_score(labels, scores), abs=1e-12)
    assert m["average_precision"] == pytest.approx(skm.average_precision_score(labels, scores), abs=1e-12)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(labels, scores > 0))
    assert m["brier"] == pytest.approx(skm.brier_score_loss(labels, probs), abs=1e-12)
    assert m["ece"] == pytest.approx(_ece_reference(labels, probs), abs=1e-12)
    for rate, key in ((0.01, "tpr_at_1pct_fpr"), (0.05, "tpr_at_5pct_fpr")):
        assert m[key] == pytest.approx(_tpr_at_fpr_reference(labels, scores, rate), abs=1e-12)


def test_calibrated_threshold_maximises_accuracy_on_the_calibration_split():
    labels, scores, _ = _data("random", seed=1)
    t = best_threshold(labels, scores)
    acc = np.mean((scores > t) == labels)
    assert all(acc >= np.mean((scores > c) == labels) for c in np.linspace(-3, 3, 301))
    out = monitor_metrics(*_data("random", seed=2), calibration=(labels, scores), samples=0)
    assert out["threshold_calibrated"]["value"] == t and "accuracy_calibrated" in out


def test_bootstrap_interval_brackets_the_estimate_and_is_seeded():
    labels, scores, probs = _data("random", seed=3)
    out = monitor_metrics(labels, scores, probs, samples=200, seed=7)
    for k in ("auroc", "tpr_at_5pct_fpr", "brier"):
        assert out[k]["low"] <= out[k]["value"] <= out[k]["high"] and out[k]["low"] < out[k]["high"]
    assert monitor_metrics(labels, scores, probs, samples=200, seed=7) == out


def test_one_class_only_is_a_clear_error_not_nan():
    with pytest.raises(MetricError, match="only class 1 is present among 5 rows"):
        point_metrics(np.ones(5, int), np.arange(5.0), np.full(5, 0.5))
    with pytest.raises(MetricError, match="labels must be 0/1"):
        point_metrics(np.array([0, 1, 2]), np.arange(3.0), np.full(3, 0.5))
    # A lone negative: resamples without it are redrawn, never reported as NaN.
    labels = np.array([1] * 19 + [0])
    out = bootstrap(labels, np.arange(20.0), np.full(20, .5), samples=50)
    assert all(np.isfinite(v).all() for v in out.values())


@pytest.mark.parametrize("kind", ["random", "ties"])
def test_every_resample_s_metrics_equal_scikit_learn_s_on_the_resampled_rows(kind):
    """The bootstrap computes all resamples at once from counts; each must be point_metrics of its rows."""
    labels, scores, probs = _data(kind, seed=4, n=150)
    threshold = 0.3
    idx = resamples(labels, 40, seed=5)
    assert idx.shape == (40, 150) and all(0 < labels[i].sum() < 150 for i in idx)
    batched = resampled_metrics(labels, scores, probs, idx, threshold)
    for r, i in enumerate(idx):
        expected = point_metrics(labels[i], scores[i], probs[i], threshold)
        assert set(batched) == set(expected)
        for k, v in expected.items():
            assert batched[k][r] == pytest.approx(v, abs=1e-12), (k, r)


def test_tpr_at_fpr_on_perfect_and_useless_scores():
    labels = np.array([0] * 50 + [1] * 50)
    assert tpr_at_fpr(labels, labels.astype(float), 0.01) == 1.0
    assert expected_calibration_error(labels, labels.astype(float)) == 0.0
