"""The real SmolLM2-135M-Instruct: classification train step and scorer against transformers + PyTorch.

    python -m benchmarks.real_model [--batch 16 --length 128 --rows 192 --reps 3]

Rows are demo-suite prompts under the demo tasks, tokenized by the checkpoint's own tokenizer and chat
template (labels `Yes`/`No`). Same model (the GGUF converted once, monitor_jax/model/gguf.py), batch, lengths,
float32 and threads, one process. Peers:
  full logits     right padding, labels -100 except the label token: [B, T, V] logits and masked CE
                  (what `labels=` in transformers does);
  logits_to_keep  left padding and `logits_to_keep=1`: the label is predicted at the last position, so only
                  [B, 1, V] logits are computed (what a careful PyTorch user writes).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import jax
import numpy as np
import optax
from flax import nnx

from benchmarks.common import one_device_mesh, print_header, seconds, torch_classification_step
from monitor_jax.data import demo, research
from monitor_jax.data.encode import ClassificationEncoder, pad
from monitor_jax.data.pipeline import stack
from monitor_jax.eval.scoring import Scorer
from monitor_jax.model import load_hf, lora
from monitor_jax.model.gguf import SMOLLM2, resolve_model_path
from monitor_jax.model.tokenizer import load_tokenizer
from monitor_jax.train.step import LossConfig, frozen_params, init_state, jit_train_step, make_train_step

LR = 1e-4


def examples_of(tok, domains, n, length):
    out = []
    for domain in domains:
        enc = ClassificationEncoder(research.TASKS[domain], tok, length)
        out += [enc(r) for r in demo.demo_rows(domain, "test", n=n)]
    order = np.random.default_rng(0).permutation(len(out))
    return [out[i] for i in order]


# ------------------------------------------------------------------ train step
def ours_step(path, examples, length, reps, lora_rank: int = 0):
    """(s / step, the final train state) of our classification step: full fine-tuning, or with `lora_rank` the
    default LoRA targets at alpha 2·rank (the base passed as the step's frozen argument)."""
    mesh = one_device_mesh()
    model, cfg = load_hf(path, mesh=mesh)
    trainable, frozen = nnx.Param, None
    if lora_rank:
        modules, _ = lora.select(model, lora.DEFAULT_TARGETS.split())
        lora.add_adapters(model, modules, lora_rank, 2.0 * lora_rank, mesh=mesh)
        trainable, frozen = lora.TRAINABLE, frozen_params(model, lora.TRAINABLE)
    optimizer = optax.adamw(LR)
    state = init_state(model, optimizer, mesh, trainable)
    step = make_train_step(nnx.graphdef(model), optimizer, LossConfig(instruction=False),
                           optax.constant_schedule(1.0), optax.constant_schedule(0.0))
    batch = stack([pad(ex, length, 0) for ex in examples])
    jitted = jit_train_step(step, state, mesh, batch, cfg.sharding_rules, frozen)
    holder = {"state": state}

    def run():
        args = (holder["state"], batch) if frozen is None else (holder["state"], batch, frozen)
        holder["state"], m = jitted(*args)
        jax.block_until_ready(m)

    with jax.set_mesh(mesh):
        return seconds(run, reps), holder["state"]


# The projections a LoRA peer adapts: the same modules as lora.DEFAULT_TARGETS.
PEFT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def torch_step(path, examples, length, reps, keep_last, peft_rank: int = 0):
    """s / step of transformers + PyTorch; with `peft_rank`, peft LoRA on PEFT_TARGETS at alpha 2·rank."""
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    if peft_rank:
        import peft

        model = peft.get_peft_model(model, peft.LoraConfig(r=peft_rank, lora_alpha=2 * peft_rank,
                                                           target_modules=PEFT_TARGETS, lora_dropout=0.0))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR)
    b = len(examples)
    ids = torch.zeros((b, length), dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    target = torch.tensor([int(ex.targets[ex.label_position]) for ex in examples])
    for r, ex in enumerate(examples):
        n = len(ex)
        if keep_last:   # left padding: every row's answer position is the last one
            ids[r, length - n:], mask[r, length - n:] = torch.tensor(ex.tokens), 1
        else:           # right padding, the label token appended as the one unmasked target
            ids[r, :n], mask[r, :n + 1] = torch.tensor(ex.tokens), 1
            ids[r, n], labels[r, n] = target[r], target[r]

    return seconds(torch_classification_step(model, opt, ids, mask, labels, target, keep_last), reps)


# ------------------------------------------------------------------ scoring
def ours_score(path, examples, batch, buckets):
    mesh = one_device_mesh()
    model, _ = load_hf(path, mesh=mesh)
    scorer = Scorer(nnx.graphdef(model), mesh, batch, buckets, 0)
    params = nnx.state(model, nnx.Param)
    out = {}

    def run():
        out["scores"] = scorer.score_all(params, examples)

    with jax.set_mesh(mesh):
        s = seconds(run, 1)
    return s, np.array([x.log_odds for x in out["scores"]])


def torch_score(path, examples, batch, keep_last):
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    out = {}

    def run():
        scores = []
        for i in range(0, len(examples), batch):
            chunk = examples[i:i + batch]
            t = max(len(e) for e in chunk)
            ids = torch.zeros((len(chunk), t), dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, e in enumerate(chunk):
                sl = slice(t - len(e), t) if keep_last else slice(0, len(e))
                ids[r, sl], mask[r, sl] = torch.tensor(e.tokens), 1
            with torch.no_grad():
                if keep_last:
                    logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=1).logits[:, -1]
                else:
                    full = model(input_ids=ids, attention_mask=mask).logits
                    logits = full[torch.arange(len(chunk)), torch.tensor([e.label_position for e in chunk])]
            for r, e in enumerate(chunk):
                scores.append(float(logits[r, e.positive_id] - logits[r, e.negative_id]))
        out["scores"] = np.array(scores)

    s = seconds(run, 1)
    return s, out["scores"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--rows", type=int, default=192)
    ap.add_argument("--buckets", default="80,112,144")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(os.cpu_count())
    path = Path(resolve_model_path(SMOLLM2))
    tok = load_tokenizer(path)
    b, t = args.batch, args.length
    train_rows = examples_of(tok, ("chem_harm", "cyber_harm"), b, t)[:b]
    real = sum(len(e) for e in train_rows)
    rows = [("monitor_jax classification step (label position only)",
             ours_step(path, train_rows, t, args.reps)[0]),
            ("transformers + PyTorch, full logits, masked CE", torch_step(path, train_rows, t, args.reps, False)),
            ("transformers + PyTorch, left padding, logits_to_keep=1",
             torch_step(path, train_rows, t, args.reps, True))]
    print(f"SmolLM2-135M-Instruct (converted from {SMOLLM2}), float32, {os.cpu_count()} CPU cores, one process; "
          f"train batch {b} x length {t} ({real} real tokens: chem_harm and cyber_harm rows), AdamW\n")
    print_header("train step", "s / step", "tokens / s (computed positions)", "vs ours")
    for name, s in rows:
        print(f"| {name} | {s:.2f} | {b * t / s:.0f} | {s / rows[0][1]:.2f}x |")

    buckets = tuple(int(x) for x in args.buckets.split(","))
    score_rows = examples_of(tok, ("chem_harm", "control_arena", "covert_reasoning", "imdb"), args.rows // 4,
                             max(buckets))
    s_ours, ours = ours_score(path, score_rows, b, buckets)
    s_full, full = torch_score(path, score_rows, b, False)
    s_last, last = torch_score(path, score_rows, b, True)
    lengths = np.array([len(e) for e in score_rows])
    print(f"\n{len(score_rows)} demo prompts (chem_harm, control_arena, covert_reasoning, imdb), lengths "
          f"{lengths.min()}-{lengths.max()} (mean {lengths.mean():.0f}), batch {b}; max |log-odds difference| "
          f"vs transformers: full logits {np.abs(ours - full).max():.1e}, logits_to_keep {np.abs(ours - last).max():.1e}\n")
    print_header("scorer", "rows / s", "vs ours")
    for name, s in ((f"monitor_jax, buckets {buckets}", s_ours),
                    ("transformers + PyTorch, right padding to batch max, full logits", s_full),
                    ("transformers + PyTorch, left padding, logits_to_keep=1", s_last)):
        print(f"| {name} | {len(score_rows) / s:.1f} | {s / s_ours:.2f}x |")


if __name__ == "__main__":
    main()
