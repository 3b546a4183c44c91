"""optax AdamW with warmup + decay, clipping and a weight-decay mask."""
from __future__ import annotations

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


def adamw(optim, steps: int) -> optax.GradientTransformation:
    """From the `optim` config: lr, warmup_steps, decay, end_factor, b1, b2, eps, weight_decay, clip_norm."""
    schedule = learning_rate(optim.lr, steps, optim.warmup_steps, optim.decay, optim.end_factor)
    chain = [optax.clip_by_global_norm(optim.clip_norm)] if optim.clip_norm else []
    chain.append(optax.adamw(schedule, b1=optim.b1, b2=optim.b2, eps=optim.eps,
                             weight_decay=optim.weight_decay, mask=decay_mask))
    return optax.chain(*chain)
