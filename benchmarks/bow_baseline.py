"""Bag-of-words baselines on the embedded demo monitor suite.

    python -m benchmarks.bow_baseline [--seeds 0 1 2]

Prints a Markdown table: per domain, the split sizes, the positive rate and the
test AUROC of a logistic regression on word counts (unigrams, and unigrams plus
bigrams) trained on the train split (`bow_baseline_auroc`). The suite is built so
that the label lives in how words combine, so these stay well below what a model
that reads the composition can reach; the unigram baseline must not exceed 0.95
on any domain (tests/test_demo.py). With several seeds, each AUROC is the mean and
the range over seeds.
"""
from __future__ import annotations

import argparse

from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from benchmarks.common import print_header
from monitor_jax.data import demo


def bow_baseline_auroc(domain: str, seed: int = 0, ngram_range: tuple[int, int] = (1, 1)) -> float:
    """Test AUROC of a bag-of-words (n-gram counts) logistic regression trained on the domain's train split."""
    train, test = demo.demo_rows(domain, "train", seed), demo.demo_rows(domain, "test", seed)
    # Keep one-letter words ("I", "a"): who acts is part of the signal, and the default pattern drops them.
    vectorizer = CountVectorizer(ngram_range=ngram_range, token_pattern=r"(?u)\b\w+\b")
    x_train = vectorizer.fit_transform([r["text"] for r in train])
    model = LogisticRegression(max_iter=2000).fit(x_train, [r["label"] for r in train])
    scores = model.decision_function(vectorizer.transform([r["text"] for r in test]))
    return float(roc_auc_score([r["label"] for r in test], scores))


def _cell(values: list[float]) -> str:
    mean = sum(values) / len(values)
    return f"{mean:.3f}" if len(values) == 1 else f"{mean:.3f} ({min(values):.3f}–{max(values):.3f})"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = ap.parse_args()
    print(f"Demo suite, seeds {args.seeds}: bag-of-words logistic regression, test AUROC\n")
    print_header("domain", "n train", "n test", "positive rate (train / test)", "unigram AUROC", "uni+bigram AUROC",
                 right=5)
    for domain in demo.DOMAINS:
        train, test = demo.demo_rows(domain, "train", args.seeds[0]), demo.demo_rows(domain, "test", args.seeds[0])
        rate = " / ".join(f"{sum(r['label'] for r in rows) / len(rows):.2f}" for rows in (train, test))
        uni = [bow_baseline_auroc(domain, seed) for seed in args.seeds]
        bi = [bow_baseline_auroc(domain, seed, ngram_range=(1, 2)) for seed in args.seeds]
        print(f"| {domain} | {len(train)} | {len(test)} | {rate} | {_cell(uni)} | {_cell(bi)} |")


if __name__ == "__main__":
    main()
