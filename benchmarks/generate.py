"""Generation throughput: `generate_ids` against transformers' `generate`, same model, same process.

    python -m benchmarks.generate [--batch 16 --new 128 --reps 2] [--skip-real]

Two models:
  qwen3-style   a random-init Qwen3 layout with the real Qwen vocabulary (151936), written by transformers;
                ragged prompts of 64-256 tokens;
  smollm2       the real SmolLM2-135M-Instruct (the GGUF converted once, monitor_jax/model/gguf.py);
                chat-templated demo-suite prompts.
Greedy, batch 16, 128 new tokens, stop ids off on both sides so every row writes all 128 (the figure is
new tokens / s over the whole batch). transformers gets the batch left-padded with its attention mask (what
its docs prescribe for batched generation) and its default dynamic cache; the same dtype on both sides (--dtype).
Ours: one `Sampler` batch (one prompt bucket: the smallest of 64/128/256/512 holding the longest prompt);
compile time is the first call minus a warm call, reported separately; prefill is a warm call with one
new token. Greedy outputs are compared token for token and the agreement is printed.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from benchmarks.common import print_header
from monitor_jax.generate import Sampler
from monitor_jax.model import load_hf

QWEN3 = dict(vocab_size=151936, hidden_size=512, intermediate_size=1536, num_hidden_layers=8,
             num_attention_heads=8, num_key_value_heads=4, head_dim=64, tie_word_embeddings=True,
             max_position_embeddings=4096)


def qwen3_dir(root: Path) -> Path:
    import torch
    import transformers

    torch.manual_seed(0)
    model = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**QWEN3)).eval()
    model.save_pretrained(str(root / "qwen3"))
    return root / "qwen3"


def ragged(n: int, vocab: int, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(10, vocab, size=int(rng.integers(64, 257))).tolist() for _ in range(n)]


def chat_prompts(path: str, n: int) -> list[list[int]]:
    from monitor_jax.data import demo
    from monitor_jax.model.tokenizer import load_tokenizer

    tok = load_tokenizer(path)
    rows = [r for domain in ("chem_harm", "control_arena", "imdb") for r in demo.demo_rows(domain, "test", n=n)]
    return [tok.encode(tok.chat([{"role": "user", "content": f"Explain briefly whether this is harmful: {r['text']}"}],
                                add_generation_prompt=True)) for r in rows[:n]]


def ours(path, prompts, new, reps, dtype):
    model, _ = load_hf(path, param_dtype=dtype)
    bucket = next(b for b in (64, 128, 256, 512) if b >= max(map(len, prompts)))   # one batch, one bucket
    graphdef, params = nnx.split(model)
    sampler = Sampler(graphdef, model.cfg, max_prompt_length=bucket, max_new_tokens=new, batch_size=len(prompts),
                      buckets=(bucket,), eos_ids=())
    t0 = time.perf_counter()
    out = sampler.generate(prompts, params=params)
    first = time.perf_counter() - t0
    times, prefill = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = sampler.generate(prompts, params=params)
        times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        sampler.generate(prompts, params=params, max_new_tokens=1)   # the same program: prefill and the first token only
        prefill.append(time.perf_counter() - t0)
    warm = min(times)
    return [g.ids for g in out], warm, first - warm, min(prefill)


def torch_generate(path, prompts, new, reps, dtype):
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, dtype)).eval()
    length = max(map(len, prompts))
    ids = torch.zeros((len(prompts), length), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):   # left padding
        ids[i, length - len(p):], mask[i, length - len(p):] = torch.tensor(p), 1
    kw = dict(attention_mask=mask, max_new_tokens=new, min_new_tokens=new, do_sample=False, eos_token_id=None,
              pad_token_id=0)
    times = []
    with torch.no_grad():
        for _ in range(reps):
            t0 = time.perf_counter()
            out = model.generate(ids, **kw)
            times.append(time.perf_counter() - t0)
    return [row[length:].tolist() for row in out], min(times)


def compare(name, path, prompts, new, reps, dtype):
    ours_ids, ours_s, compile_s, prefill_s = ours(path, prompts, new, reps, dtype)
    torch_ids, torch_s = torch_generate(path, prompts, new, reps, dtype)
    tokens = len(prompts) * new
    same = sum(a == b for a, b in zip(ours_ids, torch_ids))
    lengths = [len(p) for p in prompts]
    print(f"| {name} | {dtype} | {len(prompts)} | {min(lengths)}-{max(lengths)} | {new} | {tokens / torch_s:.1f} | "
          f"{tokens / ours_s:.1f} | {torch_s / ours_s:.2f}x | {torch_s:.2f} | {ours_s:.2f} | {prefill_s:.2f} | "
          f"{1000 * (ours_s - prefill_s) / (new - 1):.1f} | {compile_s:.1f} | {same}/{len(prompts)} |", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--skip-real", action="store_true")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                    help="parameters and compute, both sides")
    args = ap.parse_args()
    import torch

    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; torch {torch.__version__} with "
          f"{torch.get_num_threads()} threads; {args.dtype}, greedy\n")
    print_header("model", "dtype", "batch", "prompt tokens", "new tokens", "transformers tok/s", "ours tok/s",
                 "speed-up", "transformers s", "ours s", "ours prefill s", "ours ms/decode step", "our compile s",
                 "rows identical")
    with tempfile.TemporaryDirectory() as tmp:
        path = qwen3_dir(Path(tmp))
        compare("qwen3-style, vocab 151936, 8 layers, d 512", path, ragged(args.batch, QWEN3["vocab_size"]),
                args.new, args.reps, args.dtype)
    if not args.skip_real:
        from monitor_jax.model.gguf import SMOLLM2, resolve_model_path

        path = resolve_model_path(SMOLLM2)
        compare("SmolLM2-135M-Instruct (real)", path, chat_prompts(path, args.batch), args.new, args.reps,
                args.dtype)


if __name__ == "__main__":
    main()
