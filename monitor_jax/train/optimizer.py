"""optax AdamW with warmup + decay, clipping and a weight-decay mask."""
from __future__ import annotations

import dataclasses

import jax
import optax

from monitor_jax.settings import setting

DECAYS = ("cosine", "linear", "constant")


def learning_rate(lr: float, steps: int, warmup_steps: int = 0, decay: str = "cosine",
                  end_factor: float = 0.0) -> optax.Schedule:
    """Linear warmup from 0 to `lr`, then cosine / linear decay to `end_factor`·lr, or constant."""
    if decay not in DECAYS:
        raise ValueError(f"optim.decay={decay!r}; choose one of {DECAYS}")
    warmup = min(warmup_steps, steps)
    if decay == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(steps, warmup + 1), end_factor * lr)
    after = {"linear": optax.linear_schedule(lr, end_factor * lr, max(steps - warmup, 1)),
             "constant": optax.constant_schedule(lr)}[decay]
    return optax.join_schedules([optax.linear_schedule(0.0, lr, max(warmup, 1)), after], [warmup])


def decay_mask(params):
    """Weight decay on matrices only: not on norm scales or biases (the usual LLM recipe)."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """The `optim` config block: AdamW with warmup + decay and global-norm clipping (0 = off)."""
    lr: float = setting(1e-5, "peak learning rate", low=0.0)
    warmup_steps: int = setting(0, "linear warmup from 0 to lr over these steps", low=0)
    decay: str = setting("cosine", "the learning rate after warmup", choices=DECAYS)
    end_factor: float = setting(0.1, "cosine / linear decay ends at end_factor * lr", low=0.0)
    b1: float = setting(0.9, "AdamW first-moment decay", low=0.0, high=1.0)
    b2: float = setting(0.95, "AdamW second-moment decay", low=0.0, high=1.0)
    eps: float = setting(1e-8, "AdamW epsilon", low=0.0)
    weight_decay: float = setting(0.0, "AdamW weight decay, on matrices only (not norms or biases)", low=0.0)
    clip_norm: float = setting(1.0, "global gradient-norm clipping (0 = off)", low=0.0)
    mu_dtype: str = setting("float32", "AdamW first-moment dtype (bfloat16 halves its memory; the second moment "
                            "stays in the parameters' dtype: docs/precision.md)", choices=("float32", "bfloat16"))


def adamw(optim: OptimConfig, steps: int) -> optax.GradientTransformation:
    """AdamW over `steps` steps with the learning-rate schedule and clipping of `optim`."""
    schedule = learning_rate(optim.lr, steps, optim.warmup_steps, optim.decay, optim.end_factor)
    chain = [optax.clip_by_global_norm(optim.clip_norm)] if optim.clip_norm else []
    chain.append(optax.adamw(schedule, b1=optim.b1, b2=optim.b2, eps=optim.eps,
                             weight_decay=optim.weight_decay, mask=decay_mask, mu_dtype=optim.mu_dtype))
    return optax.chain(*chain)
