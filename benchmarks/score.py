"""Scoring throughput: the jitted bucketed scorer against transformers + PyTorch, same rows.

    python -m benchmarks.score [--rows 256 --batch 16]

Rows are demo-suite prompts (chemistry and agent domains, mixed lengths) scored
by the same random-init model (weights exported from monitor_jax and loaded by
transformers). transformers pads every batch to its longest row and computes
full [B, T, V] logits, reading the answer position; the careful transformers
user left-pads instead and passes `logits_to_keep=1` (one position unembedded
per row, like us), and the most careful one also sorts the prompts by length so
each batch pads little; the scorer pads to a length bucket and unembeds the answer
position only, and is also run packed and on length-sorted input. Also: the
fraction of computed token positions that are real tokens.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from benchmarks.common import one_device_mesh, print_header


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--buckets", default="32,64,96,128,192,256")
    ap.add_argument("--pack_max", type=int, default=16, help="prompts per packed row (the packed scorer's row)")
    ap.add_argument("--model_vocab", type=int, default=0, help="model vocabulary (default: the tokenizer's); "
                    "a real LLM's, e.g. 151936, shows the cost of full logits")
    args = ap.parse_args()
    import torch
    import transformers

    from monitor_jax.data import demo, tasks
    from monitor_jax.data.encode import ClassificationEncoder
    from monitor_jax.eval.scoring import Scorer
    from monitor_jax.model import ModelConfig, create_model, save_hf

    tmp = Path(tempfile.mkdtemp())
    tok = demo.build_demo_tokenizer(tmp / "tok")
    buckets = tuple(int(b) for b in args.buckets.split(","))
    half = args.rows // 2
    examples = []
    for domain in ("chem_harm", "control_arena"):
        enc = ClassificationEncoder(tasks.get(domain), tok, max(buckets))
        examples += [enc(r) for r in demo.demo_rows(domain, "test", n=half)]
    order = np.random.default_rng(0).permutation(len(examples))
    examples = [examples[i] for i in order]
    cfg = ModelConfig(family="qwen3", vocab_size=args.model_vocab or tok.vocab_size, embed_dim=256, num_layers=4,
                      num_heads=4, num_kv_heads=2, head_dim=64, mlp_dim=1024, qk_norm=True, tie_embeddings=True)
    mesh = one_device_mesh()
    model = create_model(cfg, mesh=mesh)
    save_hf(model, tmp / "hf")
    params = nnx.state(model, nnx.Param)

    by_length = sorted(range(len(examples)), key=lambda i: len(examples[i]))

    def run_ours(bucket_list, pack_max=0, sort=False):
        """(seconds, log-odds in input order, real tokens / computed positions) of the second pass; `sort`:
        the prompts go in sorted by length (their scores are put back in input order)."""
        scorer = Scorer(nnx.graphdef(model), mesh, args.batch, bucket_list, tok.pad_id, pack_max=pack_max)
        order = by_length if sort else list(range(len(examples)))
        with jax.set_mesh(mesh):
            scorer.score_all(params, [examples[i] for i in order])      # compile every bucket once
            scorer.real_tokens = scorer.computed_positions = 0
            t0 = time.perf_counter()
            out = scorer.score_all(params, [examples[i] for i in order])
        log_odds = np.empty(len(examples))
        log_odds[order] = [s.log_odds for s in out]
        return time.perf_counter() - t0, log_odds, scorer.real_tokens / scorer.computed_positions

    s_bucketed, ours, f_bucketed = run_ours(buckets)
    s_single, _, f_single = run_ours((max(buckets),))
    s_packed, ours_packed, f_packed = run_ours(buckets, pack_max=args.pack_max)
    s_sorted, ours_sorted, f_sorted = run_ours(buckets, sort=True)
    assert max(np.abs(ours - ours_packed).max(), np.abs(ours - ours_sorted).max()) < 1e-4

    torch.set_num_threads(os.cpu_count())
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp / "hf"), dtype=torch.float32).eval()

    def run_hf(left: bool, order=None):
        """Right padding + full logits read at each answer position, or `left` padding + logits_to_keep=1
        (every row ends at its answer position; RoPE is relative, so the shift changes nothing); batches of
        the prompts in `order` (default: input order), scores returned in input order."""
        order = list(range(len(examples))) if order is None else order
        scores = np.empty(len(examples))
        for i in range(0, len(examples), args.batch):
            chunk = [examples[j] for j in order[i:i + args.batch]]
            t = max(len(e) for e in chunk)
            ids = torch.full((len(chunk), t), tok.pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, e in enumerate(chunk):
                span = slice(t - len(e), t) if left else slice(0, len(e))
                ids[r, span] = torch.tensor(e.tokens)
                mask[r, span] = 1
            with torch.no_grad():
                if left:
                    last = hf(input_ids=ids, attention_mask=mask, logits_to_keep=1).logits[:, -1]
                else:
                    logits = hf(input_ids=ids, attention_mask=mask).logits
            for r, e in enumerate(chunk):
                row = last[r] if left else logits[r, e.label_position]
                scores[order[i + r]] = float(row[e.positive_id] - row[e.negative_id])
        return scores

    timings = {}
    for left, order in ((False, None), (True, None), (True, by_length)):
        run_hf(left, order)
        t0 = time.perf_counter()
        theirs = run_hf(left, order)
        timings[left, order is not None] = time.perf_counter() - t0
        assert np.abs(ours - theirs).max() < 1e-3, (left, np.abs(ours - theirs).max())
    s_hf, s_peer, s_peer_sorted = timings[False, False], timings[True, False], timings[True, True]

    real = sum(len(e) for e in examples)
    lengths = np.array([len(e) for e in examples])

    def hf_positions(order):
        """Positions the peer computes: each batch padded to its longest prompt."""
        return sum(max(lengths[order[i:i + args.batch]]) * len(order[i:i + args.batch])
                   for i in range(0, len(order), args.batch))

    hf_pos, hf_pos_sorted = hf_positions(np.arange(len(lengths))), hf_positions(np.array(by_length))
    print(f"{len(examples)} demo prompts, lengths {lengths.min()}-{lengths.max()} (mean {lengths.mean():.0f}); "
          f"model {cfg.num_params() / 1e6:.1f}M params, vocab {cfg.vocab_size}; batch {args.batch}; float32; "
          f"{os.cpu_count()} CPU cores. Max |log-odds difference| vs transformers: {np.abs(ours - theirs).max():.1e}\n")
    print_header("scorer", "rows / s", "real tokens / computed positions")
    print(f"| monitor_jax, buckets {buckets} | {len(examples) / s_bucketed:.0f} | {f_bucketed:.1%} |")
    print(f"| monitor_jax, one bucket ({max(buckets)}) | {len(examples) / s_single:.0f} | {f_single:.1%} |")
    print(f"| monitor_jax, packed (<= {args.pack_max} prompts per row of {max(buckets)}) | "
          f"{len(examples) / s_packed:.0f} | {f_packed:.1%} |")
    print(f"| monitor_jax, buckets, prompts sorted by length first | {len(examples) / s_sorted:.0f} | {f_sorted:.1%} |")
    print(f"| transformers + PyTorch, pad to batch max, full logits | {len(examples) / s_hf:.0f} | "
          f"{real / hf_pos:.1%} |")
    print(f"| transformers + PyTorch, left-pad to batch max, logits_to_keep=1 | {len(examples) / s_peer:.0f} | "
          f"{real / hf_pos:.1%} |")
    print(f"| transformers + PyTorch, prompts sorted by length, left-pad, logits_to_keep=1 | "
          f"{len(examples) / s_peer_sorted:.0f} | {real / hf_pos_sorted:.1%} |")
    print("\n(computed positions include the padding rows of each bucket's last, partial batch)")


if __name__ == "__main__":
    main()
