"""The experiment config: every key a run reads, with its default. Config files start here.

Config files (`configs/*.py`) define `get_config()` returning `base_config()`
with changes; the command line overrides any key (`--config.train.steps=100`).
The config is locked, so a misspelt key is an error, not a silent default.
"""
from __future__ import annotations

import math

import ml_collections

from monitor_jax.data.mixing import SCHEDULES
from monitor_jax.train.losses import NORMALIZATIONS
from monitor_jax.train.optimizer import DECAYS


class ConfigError(ValueError):
    """A config value is invalid; the message names the key."""


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.workdir = "runs/default"
    c.seed = 0
    c.model = dict(
        hf_path="",             # a Hugging Face checkpoint directory to start from, or
        config={},              # ModelConfig fields of a random-init model (vocab from the tokenizer)
        tokenizer="",           # tokenizer directory ("" = hf_path; "demo" = build the demo tokenizer)
        param_dtype="float32", dtype="float32", remat="none",
        attention="flash",      # flash (keys in blocks of attention_block: memory linear in length) | dense
        attention_block=512)
    c.mesh = dict(data=-1, fsdp=1, tensor=1)
    c.data = dict(
        max_length=512,
        classification=[],      # [{"task", "source": {...}, "weight"}]
        instruction={},         # {"task", "source": {...}, "pack": bool}; {} = none
        mixing={"kind": "constant", "value": 1.0},   # r(step): data.mixing.make_schedule arguments
        seed=0)
    c.loss = dict(normalization="per_source", two_token=False, chunk_size=256, grad_accum=1,
                  cls_weight={"kind": "constant", "value": 1.0}, sft_weight={"kind": "constant", "value": 1.0})
    c.optim = dict(lr=1e-5, warmup_steps=0, decay="cosine", end_factor=0.1, b1=0.9, b2=0.95, eps=1e-8,
                   weight_decay=0.0, clip_norm=1.0)
    c.train = dict(steps=1000, batch_size=32, log_every=10, checkpoint_every=500, keep=2,
                   best_metric="", best_mode="max",   # e.g. eval/mean_heldout_auroc
                   run_steps=0,        # stop this process after this many steps (0 = run to the end)
                   export_hf="")       # write a Hugging Face checkpoint here at the end
    c.eval = dict(tasks=[], every=0, batch_size=32, buckets=(128, 256, 512), bootstrap=1000, max_rows=0)
    c.lock()
    return c


def validate(c: ml_collections.ConfigDict, num_devices: int) -> None:
    """Checks a run would fail on later, named by key, before anything is built."""
    mesh = dict(c.mesh)
    fixed = math.prod(v for v in mesh.values() if v != -1)
    sizes = {k: (num_devices // fixed if v == -1 else v) for k, v in mesh.items()}
    dp = sizes["data"] * sizes["fsdp"]
    if "://" in c.workdir:
        # Checkpoints, metrics and the demo tokenizer are written with local-file APIs.
        raise ConfigError(f"workdir={c.workdir!r}: URLs are not supported; mount the bucket on every host "
                          f"(e.g. gcsfuse BUCKET ~/gcs) and give the mounted path")
    t = c.train
    if t.steps <= 0:
        raise ConfigError(f"train.steps={t.steps} must be positive")
    if t.batch_size % c.loss.grad_accum:
        raise ConfigError(f"train.batch_size={t.batch_size} is not divisible by loss.grad_accum={c.loss.grad_accum}")
    if (t.batch_size // c.loss.grad_accum) % dp:
        raise ConfigError(f"train.batch_size={t.batch_size} (per micro-batch {t.batch_size // c.loss.grad_accum}) "
                          f"is not divisible by the data-parallel size data*fsdp={dp} (mesh {sizes})")
    if c.eval.tasks and c.eval.batch_size % dp:
        raise ConfigError(f"eval.batch_size={c.eval.batch_size} is not divisible by data*fsdp={dp}")
    if c.data.max_length % min(c.loss.chunk_size, c.data.max_length):
        raise ConfigError(f"data.max_length={c.data.max_length} is not a multiple of loss.chunk_size="
                          f"{c.loss.chunk_size}")
    if c.loss.normalization not in NORMALIZATIONS:
        raise ConfigError(f"loss.normalization={c.loss.normalization!r}; choose one of {NORMALIZATIONS}")
    if c.optim.decay not in DECAYS:
        raise ConfigError(f"optim.decay={c.optim.decay!r}; choose one of {DECAYS}")
    if dict(c.data.mixing).get("kind") not in SCHEDULES:
        raise ConfigError(f"data.mixing.kind={dict(c.data.mixing).get('kind')!r}; choose one of {SCHEDULES}")
    if not c.data.classification and not c.data.instruction:
        raise ConfigError("data.classification and data.instruction are both empty: nothing to train on")
    for i, item in enumerate(c.data.classification):
        for key in ("task", "source"):
            if key not in item:
                raise ConfigError(f"data.classification[{i}] lacks {key!r} (has {sorted(item)})")
    if not c.model.hf_path and not c.model.config:
        raise ConfigError("set model.hf_path (a Hugging Face checkpoint) or model.config (random init)")
    if not c.model.hf_path and not c.model.tokenizer:
        raise ConfigError("model.tokenizer is required when model.hf_path is not set")
    if t.best_metric:
        if not (c.eval.tasks and c.eval.every):
            raise ConfigError(f"train.best_metric={t.best_metric!r} needs eval.tasks and eval.every")
        if t.checkpoint_every % c.eval.every:
            raise ConfigError(f"train.checkpoint_every={t.checkpoint_every} must be a multiple of eval.every="
                              f"{c.eval.every} so every checkpoint has train.best_metric")
        if t.best_mode not in ("max", "min"):
            raise ConfigError(f"train.best_mode={t.best_mode!r}; choose max or min")
