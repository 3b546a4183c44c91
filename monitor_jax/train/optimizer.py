"""optax AdamW with warmup + decay, clipping and a weight-decay mask."""
from __future__ import annotations

import dataclasses

import jax
import optax

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
    lr: float = 1e-5
    warmup_steps: int = 0
    decay: str = "cosine"
    end_factor: float = 0.1
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.0
    clip_norm: float = 1.0


def adamw(optim: OptimConfig, steps: int) -> optax.GradientTransformation:
    """AdamW over `steps` steps with the learning-rate schedule and clipping of `optim`."""
    schedule = learning_rate(optim.lr, steps, optim.warmup_steps, optim.decay, optim.end_factor)
    chain = [optax.clip_by_global_norm(optim.clip_norm)] if optim.clip_norm else []
    chain.append(optax.adamw(schedule, b1=optim.b1, b2=optim.b2, eps=optim.eps,
                             weight_decay=optim.weight_decay, mask=decay_mask))
    return optax.chain(*chain)
