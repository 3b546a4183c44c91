"""Padded vs packed training and scoring on a realistic length mix (issue 15).

    python -m benchmarks.length_mix [--examples 64 --batch 2 --max_length 8192 --pack 16]

The mix is modelled on the research's data: half conversations (100-800 tokens, log-normal around 250) and
half agent transcripts (1k-8k tokens, log-normal around 2k, long-tailed), capped at max_length. Tokens are
random ids (a random-init model cannot tell); the label is the last position. Training: every example padded
to its own row of max_length (data.pack_classification=0) against examples packed up to K a row
(data.pack_classification=K), same model and batch of rows, one epoch of the examples; scoring: the length-bucketed
scorer against the packed scorer (eval.pack_max=K). Reported: real tokens / computed positions, step or pass
time, and real tokens/s.
"""
from __future__ import annotations

import argparse
import os
import time

import jax
import numpy as np
import optax
from flax import nnx

from benchmarks.common import fresh_state, one_device_mesh, print_header
from monitor_jax.data.encode import Encoded, classification_example, pad
from monitor_jax.data.pipeline import PACK_WINDOW, PackedStream, first_fit_decreasing
from monitor_jax.data.sources import ListSource
from monitor_jax.data.tasks import LabelIds
from monitor_jax.eval.scoring import Scorer
from monitor_jax.model import ModelConfig, create_model
from monitor_jax.train.step import LossConfig, jit_train_step, make_train_step

POSITIVE, NEGATIVE = 5, 6


def lengths_of(n: int, max_length: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    chats = np.clip(rng.lognormal(np.log(250), 0.6, n - n // 2), 100, 800)
    transcripts = np.clip(rng.lognormal(np.log(2000), 0.7, n // 2), 1000, 8000)
    lengths = np.concatenate([chats, transcripts]).astype(int)
    return np.minimum(rng.permutation(lengths), max_length)


def example(length: int, vocab: int, rng: np.random.Generator) -> Encoded:
    tokens = rng.integers(10, vocab, length).astype(np.int32)
    return classification_example(tokens, int(rng.integers(0, 2)), LabelIds(POSITIVE, NEGATIVE))


def train_rows(examples: list[Encoded], max_length: int, pack_k: int) -> list[dict]:
    """One epoch of training rows: padded, or packed exactly as a run with data.pack_classification=K packs."""
    if not pack_k:
        return [pad(ex, max_length, 0) for ex in examples]
    source = ListSource([{"i": i} for i in range(len(examples))])
    stream = PackedStream(source, lambda row, where: examples[row["i"]], max_length, 0, seed=0, max_items=pack_k,
                          slots=pack_k, window=PACK_WINDOW)
    return [stream[j] for j in range(len(stream._packs(0)))]


def time_training(cfg, rows: list[dict], batch: int) -> tuple[float, int, int, int]:
    """(seconds, real tokens, computed positions, steps) of one epoch: every row, `batch` rows a step (after a
    compiling step)."""
    mesh, model, optimizer, state = fresh_state(cfg)
    step = make_train_step(nnx.graphdef(model), optimizer, LossConfig(instruction=False),
                           optax.constant_schedule(1.0), optax.constant_schedule(1.0))
    batches = [{k: np.stack([r[k] for r in rows[i:i + batch]]) for k in rows[0]}
               for i in range(0, len(rows) - batch + 1, batch)]
    jitted = jit_train_step(step, state, mesh, batches[0], cfg.sharding_rules)
    with jax.set_mesh(mesh):
        state, m = jitted(state, batches[0])          # compile
        jax.block_until_ready(m)
        t0 = time.perf_counter()
        for b in batches:
            state, m = jitted(state, b)
        jax.block_until_ready(m)
    real = sum(int((b["segment_ids"] > 0).sum()) for b in batches)
    return time.perf_counter() - t0, real, sum(b["tokens"].size for b in batches), len(batches)


def time_scoring(cfg, examples: list[Encoded], batch: int, buckets, pack_k: int, repeats: int) -> tuple[float, float]:
    """(median seconds of `repeats` passes over all examples after a compiling pass, real tokens / computed
    positions). The median: on this shared 2-core machine one pass can take 1.4x another."""
    mesh = one_device_mesh()
    model = create_model(cfg, mesh=mesh)
    scorer = Scorer(nnx.graphdef(model), mesh, batch, buckets, 0, pack_max=pack_k)
    params = nnx.state(model, nnx.Param)
    with jax.set_mesh(mesh):
        scorer.score_all(params, examples)
        scorer.real_tokens = scorer.computed_positions = 0
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            scorer.score_all(params, examples)
            times.append(time.perf_counter() - t0)
    return float(np.median(times)), scorer.real_tokens / scorer.computed_positions


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=64)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--max_length", type=int, default=8192)
    ap.add_argument("--pack", type=int, default=16)
    ap.add_argument("--embed", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--score_examples", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3, help="scoring passes timed (the median is reported)")
    ap.add_argument("--block", type=int, default=ModelConfig.attention_block, help="flash attention block")
    ap.add_argument("--parts", default="train,score", help="which tables: train, score or both")
    args = ap.parse_args()
    cfg = ModelConfig(family="qwen3", vocab_size=args.vocab, embed_dim=args.embed, num_layers=args.layers,
                      num_heads=4, num_kv_heads=2, head_dim=args.embed // 4, mlp_dim=4 * args.embed, qk_norm=True,
                      tie_embeddings=True, attention_block=args.block)
    lengths = lengths_of(args.examples, args.max_length)
    rng = np.random.default_rng(1)
    examples = [example(int(n), args.vocab, rng) for n in lengths]
    print(f"{len(lengths)} examples: lengths {lengths.min()}-{lengths.max()}, median {int(np.median(lengths))}, "
          f"mean {lengths.mean():.0f}; max_length {args.max_length}; model d {args.embed}, {args.layers} layers, "
          f"vocab {args.vocab} ({cfg.num_params() / 1e6:.1f}M params); attention block {args.block}; "
          f"batch {args.batch} rows; float32; "
          f"{os.cpu_count()} CPU cores\n")
    parts = args.parts.split(",")
    if "train" in parts:
        train_table(cfg, examples, args)
    if "score" in parts:
        score_table(cfg, examples, args)
    bins = first_fit_decreasing([len(ex) for ex in examples], args.max_length, args.pack)
    print(f"\n(first-fit decreasing over all {len(examples)} at once would fill "
          f"{sum(lengths) / (len(bins) * args.max_length):.1%} of {len(bins)} rows; the training stream packs "
          f"first-fit decreasing within windows of {PACK_WINDOW} shuffled examples)")


def train_table(cfg, examples: list[Encoded], args):
    print_header("training, one epoch", "rows", "examples / row", "real tokens / positions", "steps", "s / step",
                 "epoch s", "real tokens / s")
    for name, k in (("padded (one example a row)", 0), (f"packed (<= {args.pack} a row)", args.pack)):
        rows = train_rows(examples, args.max_length, k)
        s, real, computed, steps = time_training(cfg, rows, args.batch)
        print(f"| {name} | {len(rows)} | {len(examples) / len(rows):.1f} | {real / computed:.1%} | {steps} | "
              f"{s / steps:.2f} | {s:.1f} | {real / s:.0f} |")


def score_table(cfg, examples: list[Encoded], args):
    scored = examples[:args.score_examples]
    buckets = tuple(b for b in (256, 512, 1024, 2048, 4096, 8192) if b <= args.max_length)
    print()
    print_header(f"scoring ({len(scored)} examples, batch {args.batch})", "real tokens / positions", "s (median)",
                 "real tokens / s")
    real = sum(len(ex) for ex in scored)
    for name, k in ((f"buckets {buckets}", 0), (f"packed (<= {args.pack} a row of {buckets[-1]})", args.pack)):
        s, fraction = time_scoring(cfg, scored, args.batch, buckets, k, args.repeats)
        print(f"| {name} | {fraction:.1%} | {s:.2f} | {real / s:.0f} |")


if __name__ == "__main__":
    main()
