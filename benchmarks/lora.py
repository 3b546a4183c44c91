"""LoRA against full fine-tuning, and against transformers + peft: the classification train step.

    python -m benchmarks.lora [--batch 8 --length 128 --rank 16 --reps 3]

Two models: the real SmolLM2-135M-Instruct (49k vocabulary, tied) and a random-init Qwen3-style model with
Qwen's 151,936-token vocabulary (untied: the unembedding is most of its parameters), written by transformers
so both frameworks load the same files. Rows are demo-suite prompts (chem_harm, cyber_harm) under the
checkpoint's chat template. For each: our full fine-tuning step and our LoRA step (rank R, alpha 2R, the
default targets: q/k/v/o and gate/up/down projections), their optimiser-state bytes and the orbax checkpoint of
the train state; and the PyTorch peer of the LoRA step, transformers + peft with the same rank, alpha and
targets, left padding and `logits_to_keep=1` (only [B, 1, V] logits: the strongest classification step a
PyTorch user writes). Float32, one process, all cores.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import jax
import orbax.checkpoint as ocp

from benchmarks.common import print_header
from benchmarks.real_model import examples_of, ours_step, torch_step
from monitor_jax.model.gguf import SMOLLM2, resolve_model_path
from monitor_jax.model.tokenizer import load_tokenizer



def qwen3_style(path: Path) -> Path:
    """A random-init Qwen3 with the 151,936-token vocabulary (4 layers, width 512), written by transformers."""
    import torch
    import transformers

    cfg = transformers.Qwen3Config(vocab_size=151_936, hidden_size=512, intermediate_size=1536, num_hidden_layers=4,
                                   num_attention_heads=8, num_key_value_heads=4, head_dim=64,
                                   tie_word_embeddings=False, max_position_embeddings=4096)
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(cfg).save_pretrained(str(path))
    return path


def ours(path: Path, examples, length: int, reps: int, rank: int):
    """(s / step, optimiser-state bytes, checkpoint bytes) of our step: full (rank 0) or LoRA."""
    s, state = ours_step(path, examples, length, reps, lora_rank=rank)
    opt_bytes = sum(x.nbytes for x in jax.tree.leaves(state.opt_state))
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = ocp.StandardCheckpointer()
        ckpt.save(Path(tmp) / "state", state)
        ckpt.wait_until_finished()
        disk = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file())
    return s, opt_bytes, disk


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(os.cpu_count())
    smol = Path(resolve_model_path(SMOLLM2))
    tok = load_tokenizer(smol)
    b, t = args.batch, args.length
    rows = examples_of(tok, ("chem_harm", "cyber_harm"), b, t)[:b]
    print(f"classification train step, batch {b} x length {t}, float32, {os.cpu_count()} CPU cores, one process; "
          f"LoRA rank {args.rank}, alpha {2 * args.rank}, targets q/k/v/o/gate/up/down\n")
    print_header("model", "step", "s / step", "tokens / s", "optimiser state MiB", "checkpoint MiB", "vs ours LoRA")
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in (("SmolLM2-135M-Instruct", smol), ("Qwen3-style, 152k vocab", qwen3_style(Path(tmp) / "q"))):
            full_s, full_opt, full_disk = ours(path, rows, t, args.reps, 0)
            lora_s, lora_opt, lora_disk = ours(path, rows, t, args.reps, args.rank)
            peer_s = torch_step(path, rows, t, args.reps, keep_last=True, peft_rank=args.rank)
            mib = lambda x: f"{x / 2**20:.1f}"  # noqa: E731
            for step, s, opt, disk in (("monitor_jax full fine-tuning", full_s, mib(full_opt), mib(full_disk)),
                                       ("monitor_jax LoRA", lora_s, mib(lora_opt), mib(lora_disk)),
                                       ("transformers + peft LoRA, logits_to_keep=1", peer_s, "", "")):
                print(f"| {name} | {step} | {s:.3f} | {b * t / s:.0f} | {opt} | {disk} | {s / lora_s:.2f}x |",
                      flush=True)


if __name__ == "__main__":
    main()
