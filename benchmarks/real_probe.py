"""Diagnostic: is the monitor signal in SmolLM2-135M-Instruct's frozen representations?

    python -m benchmarks.real_probe [--train 400 --test 200]

Reads the final hidden state at the answer position (the vector the "Yes"/"No" logits are read from) for
demo-suite rows under each domain's prompt, fits a scikit-learn logistic regression on one or two domains'
train rows, and prints its test AUROC on every domain. It bounds what a short fine-tuning run can reach, and
shows which held-out domains share a direction with the trained ones before any training.
"""
from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import print_header
from monitor_jax.data import demo, research
from monitor_jax.data.encode import ClassificationEncoder
from monitor_jax.model import load_hf
from monitor_jax.model.gguf import SMOLLM2, resolve_model_path
from monitor_jax.model.tokenizer import load_tokenizer

LENGTH, BATCH = 144, 32


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=400)
    ap.add_argument("--test", type=int, default=200)
    args = ap.parse_args()
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    path = resolve_model_path(SMOLLM2)
    tok, (model, _) = load_tokenizer(path), load_hf(path)

    @jax.jit
    def answer_hidden(tokens_BxT, segments_BxT, position_B):
        hidden_BxTxD = model.hidden_states(tokens_BxT, segment_ids=segments_BxT)
        return hidden_BxTxD[jnp.arange(tokens_BxT.shape[0]), position_B]

    def features(domain, split, n):
        enc = ClassificationEncoder(research.TASKS[domain], tok, LENGTH)
        examples = [enc(r) for r in demo.demo_rows(domain, split, n=n)]
        out = []
        for i in range(0, len(examples), BATCH):
            chunk = examples[i:i + BATCH]
            tokens, segments = np.zeros((BATCH, LENGTH), np.int32), np.zeros((BATCH, LENGTH), np.int32)
            positions = np.zeros(BATCH, np.int32)
            for r, ex in enumerate(chunk):
                tokens[r, :len(ex)], segments[r, :len(ex)], positions[r] = ex.tokens, 1, ex.label_position
            out.append(np.asarray(answer_hidden(tokens, segments, positions))[:len(chunk)])
        return np.concatenate(out), np.array([ex.label for ex in examples])

    domains = ("chem_harm", "cyber_harm", "control_arena", "covert_reasoning", "imdb")
    data = {d: (features(d, "train", args.train), features(d, "test", args.test)) for d in domains}
    print(f"SmolLM2-135M-Instruct, frozen; logistic regression (C=0.1) on the answer-position hidden state; "
          f"{args.train} train rows per trained domain, {args.test} test rows per domain\n")
    print_header("trained on", *domains)
    for trained in (("chem_harm",), ("cyber_harm",), ("chem_harm", "cyber_harm")):
        x = np.concatenate([data[d][0][0] for d in trained])
        y = np.concatenate([data[d][0][1] for d in trained])
        clf = LogisticRegression(max_iter=3000, C=0.1).fit(x, y)
        cells = [f"{roc_auc_score(data[d][1][1], clf.decision_function(data[d][1][0])):.3f}" for d in domains]
        print(f"| {' + '.join(trained)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
