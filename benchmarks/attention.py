"""Dense vs flash attention in the classification train step: XLA temporary memory and step time by length.

    python -m benchmarks.attention [--lengths 512,1024,2048,4096 --memory_lengths 8192,16384 --block 256]

The dense kernel materialises [B, K, G, T, T] scores (and keeps them for the
backward pass); the flash kernel scans key blocks with an online softmax and
recomputes each block in its custom backward. Same model, batch and data;
memory is the compiled step's `memory_analysis()` temporary size.
"""
from __future__ import annotations

import argparse
import os

import jax

from benchmarks.common import print_header
from benchmarks.train_step import compiled_temp_mib, time_ours
from monitor_jax.model import ModelConfig


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--embed", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--block", type=int, default=ModelConfig.attention_block)
    ap.add_argument("--lengths", default="512,1024,2048,4096")
    ap.add_argument("--memory_lengths", default="8192,16384", help="compiled memory only (not run)")
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()
    base = ModelConfig(family="qwen3", vocab_size=args.vocab, embed_dim=args.embed, num_layers=args.layers,
                       num_heads=4, num_kv_heads=2, head_dim=args.embed // 4, mlp_dim=4 * args.embed, qk_norm=True)
    b = args.batch
    print(f"model: qwen3-style, vocab {base.vocab_size}, d {base.embed_dim}, {base.num_layers} layers, "
          f"{base.num_heads} heads; batch {b}; classification step; float32; flash block {args.block}; "
          f"{jax.devices()[0].device_kind}, {os.cpu_count()} cores\n")
    print_header("length", "dense temp", "flash temp", "dense s / step", "flash s / step", "flash / dense time")
    timed = list(map(int, args.lengths.split(",")))
    memory_only = [int(x) for x in args.memory_lengths.split(",") if x]
    for t in timed + memory_only:
        cells = {}
        for kernel in ("dense", "flash"):
            cfg = base.replace(attention=kernel, attention_block=args.block)
            cells[kernel, "mem"] = compiled_temp_mib(cfg, b, t)
            cells[kernel, "s"] = time_ours(cfg, "cls", b, t, args.reps)[0] if t in timed else None
        fmt = lambda s: f"{s:.3f}" if s is not None else "-"  # noqa: E731
        ratio = (f"{cells['flash', 's'] / cells['dense', 's']:.2f}" if cells["dense", "s"] else "-")
        print(f"| {t} | {cells['dense', 'mem']:.0f} MiB | {cells['flash', 'mem']:.0f} MiB | "
              f"{fmt(cells['dense', 's'])} | {fmt(cells['flash', 's'])} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
