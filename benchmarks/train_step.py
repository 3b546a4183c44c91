"""Train-step throughput and MFU: our classification step, our instruction step, HF transformers + PyTorch.

    python -m benchmarks.train_step [--vocab 151936 --embed 256 --layers 4 --batch 8 --length 256]

(a) classification-only: hidden states gathered at the label position, [B, V] logits;
(b) instruction-only: chunked cross-entropy over every position;
(c) transformers + PyTorch doing (a)'s classification the usual way: full [B, T, V]
    logits, labels -100 except the label position, backward, AdamW;
(d) transformers + PyTorch the careful way: rows left-padded so the label position is the last one, and
    `logits_to_keep=1`, so it also unembeds one position per row ([B, 1, V]), cross-entropy, AdamW.
Same model size, batch, sequence length, float32 and threads. MFU = analytic FLOPs
of what the step computes / (step time × this machine's measured matmul peak).
Then XLA's compiled temporary memory of the classification step at two lengths.
"""
from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks.common import fresh_state, print_header, seconds, torch_classification_step
from monitor_jax.data.mixing import optax_schedule
from monitor_jax.model import ModelConfig
from monitor_jax.train.step import LossConfig, jit_train_step, make_train_step


def matmul_peak(n=2048, reps=10) -> float:
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    return 2 * n ** 3 / seconds(lambda: f(a), reps)


def step_flops(cfg: ModelConfig, batch: int, length: int, unembed_positions: int) -> float:
    """6·params·tokens for the layers, attention scores and values, and the unembedding where computed."""
    d, h = cfg.embed_dim, cfg.head_dim
    layer = d * h * (2 * cfg.num_heads + 2 * cfg.num_kv_heads) + 3 * d * cfg.mlp_dim
    tokens = batch * length
    attention = 2 * 2 * cfg.num_layers * batch * length * length * cfg.num_heads * h   # QK^T and PV, forward
    return 6 * cfg.num_layers * layer * tokens + 3 * attention + 6 * d * cfg.vocab_size * unembed_positions


def batch_of(kind: str, b: int, t: int, vocab: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, vocab, (b, t)).astype(np.int32)
    cls = kind == "cls"
    weights = np.zeros((b, t), np.float32)
    if cls:
        weights[:, -1] = 1
    else:
        weights[:, :-1] = 1
    return dict(tokens=tokens, targets=np.roll(tokens, -1, axis=1), weights=weights,
                segment_ids=np.ones((b, t), np.int32), positions=np.tile(np.arange(t, dtype=np.int32), (b, 1)),
                label_position=np.full(b, t - 1 if cls else -1, np.int32), label=np.full(b, 1 if cls else -1, np.int32),
                positive_id=np.full(b, 5, np.int32), negative_id=np.full(b, 6, np.int32),
                task_id=np.zeros(b, np.int32), kind=np.full(b, 1 if cls else 0, np.int32),
                truncated=np.zeros(b, np.int32))


def jitted_step(cfg: ModelConfig, kind: str, b: int, t: int, instruction: bool):
    """(mesh, jitted train step, fresh state, a `kind` batch of b x t) of a random-init `cfg` on one device."""
    mesh, model, optimizer, state = fresh_state(cfg)
    step = make_train_step(nnx.graphdef(model), optimizer, LossConfig(chunk_size=min(128, t), instruction=instruction),
                           optax_schedule("constant", value=1.0), optax_schedule("constant", value=1.0))
    batch = batch_of(kind, b, t, cfg.vocab_size)
    return mesh, jit_train_step(step, state, mesh, batch, cfg.sharding_rules), state, batch


def time_ours(cfg, kind, b, t, reps, mixed_path=False):
    mesh, jitted, state, batch = jitted_step(cfg, kind, b, t, instruction=kind != "cls" or mixed_path)
    with jax.set_mesh(mesh):
        state, m = jitted(state, batch)
        jax.block_until_ready(m)
        t0 = time.perf_counter()
        for _ in range(reps):
            state, m = jitted(state, batch)
        jax.block_until_ready(m)
    return (time.perf_counter() - t0) / reps, jitted, state, batch


def compiled_temp_mib(cfg: ModelConfig, b: int, length: int, instruction: bool = False) -> float:
    """XLA temporary memory (MiB) of the compiled step on a classification batch."""
    mesh, jitted, state, batch = jitted_step(cfg, "cls", b, length, instruction)
    with jax.set_mesh(mesh):
        return jitted.lower(state, batch).compile().memory_analysis().temp_size_in_bytes / 2**20


def hf_model(cfg: ModelConfig):
    """(Qwen3ForCausalLM of `cfg`'s shape in training mode, its AdamW), torch on every core."""
    import torch
    import transformers

    torch.set_num_threads(os.cpu_count())
    hf_cfg = transformers.Qwen3Config(vocab_size=cfg.vocab_size, hidden_size=cfg.embed_dim,
                                      intermediate_size=cfg.mlp_dim, num_hidden_layers=cfg.num_layers,
                                      num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
                                      head_dim=cfg.head_dim, tie_word_embeddings=cfg.tie_embeddings)
    model = transformers.Qwen3ForCausalLM(hf_cfg).train()
    return model, torch.optim.AdamW(model.parameters(), lr=1e-4)


def time_hf(cfg, b, t, reps, last_only=False):
    """(c) full logits and the -100-masked labels, or (d) `last_only`: logits_to_keep=1 and CE on [B, V]."""
    import torch

    model, opt = hf_model(cfg)
    batch = batch_of("cls", b, t, cfg.vocab_size)
    ids = torch.tensor(batch["tokens"], dtype=torch.long)
    labels = torch.full_like(ids, -100)
    labels[:, -1] = 5   # the usual way: the label is the last input token, the only unmasked target
    mask = torch.ones_like(ids)

    target = torch.full((b,), 5, dtype=torch.long)
    # last_only: every row ends at its label position (left padding), so the last logits are the answer's.
    return seconds(torch_classification_step(model, opt, ids, mask, labels, target, last_only), reps)


def model_flags() -> argparse.ArgumentParser:
    """The model and batch flags this benchmark and benchmarks/step_profile.py share."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--vocab", type=int, default=151936)
    ap.add_argument("--embed", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--length", type=int, default=256)
    ap.add_argument("--reps", type=int, default=5)
    return ap


def model_config(args) -> ModelConfig:
    return ModelConfig(family="qwen3", vocab_size=args.vocab, embed_dim=args.embed, num_layers=args.layers,
                       num_heads=4, num_kv_heads=2, head_dim=args.embed // 4, mlp_dim=4 * args.embed, qk_norm=True)


def main():
    ap = model_flags()
    ap.add_argument("--memory_lengths", default="256,1024")
    args = ap.parse_args()
    cfg = model_config(args)
    b, t = args.batch, args.length
    peak = matmul_peak()
    rows = []
    s_cls, *_ = time_ours(cfg, "cls", b, t, args.reps)
    rows.append(("(a) monitor_jax classification step", s_cls, step_flops(cfg, b, t, b)))
    s_mix, *_ = time_ours(cfg, "cls", b, t, args.reps, mixed_path=True)
    rows.append(("(a') same rows, step of a mixed run (chunks skipped)", s_mix, step_flops(cfg, b, t, b)))
    s_sft, *_ = time_ours(cfg, "sft", b, t, args.reps)
    rows.append(("(b) monitor_jax instruction step (chunked CE)", s_sft, step_flops(cfg, b, t, b * t)))
    s_hf = time_hf(cfg, b, t, args.reps)
    rows.append(("(c) transformers + PyTorch, full logits", s_hf, step_flops(cfg, b, t, b * t)))
    s_peer = time_hf(cfg, b, t, args.reps, last_only=True)
    rows.append(("(d) transformers + PyTorch, left padding, logits_to_keep=1", s_peer, step_flops(cfg, b, t, b)))
    print(f"model: qwen3-style, vocab {cfg.vocab_size}, d {cfg.embed_dim}, {cfg.num_layers} layers, "
          f"{cfg.num_params() / 1e6:.1f}M params; batch {b} x length {t}; float32; "
          f"{jax.devices()[0].device_kind}, {os.cpu_count()} cores; measured matmul peak {peak / 1e9:.1f} GFLOP/s\n")
    print_header("step", "s / step", "tokens / s", "analytic GFLOP / step", "MFU")
    for name, s, flops in rows:
        print(f"| {name} | {s:.3f} | {b * t / s:.0f} | {flops / 1e9:.1f} | {flops / s / peak:.1%} |")
    print(f"\nclassification step speed-up over transformers + PyTorch: {s_hf / s_cls:.2f}x with full logits (c), "
          f"{s_peer / s_cls:.2f}x over logits_to_keep=1 (d)")

    small_vocab = 32000

    def temp_mib(vocab, length, mixed):
        return compiled_temp_mib(cfg.replace(vocab_size=vocab), b, length, instruction=mixed)

    print(f"\nXLA temporary memory of the step on a classification batch (batch {b}); the vocabulary-dependent "
          f"part is the difference between vocab {cfg.vocab_size} and {small_vocab}:\n")
    print_header("length", "run", f"temp, vocab {cfg.vocab_size}", f"temp, vocab {small_vocab}", "vocabulary-dependent",
                 "[B, T, V] logits would add")
    for length in map(int, args.memory_lengths.split(",")):
        for mixed in (False, True):
            big, small = temp_mib(cfg.vocab_size, length, mixed), temp_mib(small_vocab, length, mixed)
            run = "mixed (instruction loss traced, chunk 128)" if mixed else "classification only"
            print(f"| {length} | {run} | {big:.0f} MiB | {small:.0f} MiB | {big - small:.0f} MiB | "
                  f"{b * length * (cfg.vocab_size - small_vocab) * 4 / 2**20:.0f} MiB |")

if __name__ == "__main__":
    main()
