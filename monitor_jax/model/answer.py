"""The monitor's readout: logits at the answer position only, shared by the classification loss and the scorer.

Gathering the hidden state at each row's answer (label) position before unembedding keeps the logits at
[B, V]: the [B, T, V] logits of a classification row are never built.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

Unembed = Callable[[jax.Array], jax.Array]   # hidden [..., D] -> float32 logits [..., V]


def answer_logits(unembed: Unembed, hidden_BxTxD: jax.Array, position_B: jax.Array, positive_B: jax.Array,
                  negative_B: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(logits_BxV at `position_B`, the positive label's logit_B, the negative label's logit_B)."""
    hidden_BxD = jnp.take_along_axis(hidden_BxTxD, position_B[:, None, None], axis=1)[:, 0]
    logits_BxV = unembed(hidden_BxD)
    positive_logit_B = jnp.take_along_axis(logits_BxV, positive_B[:, None], axis=1)[:, 0]
    negative_logit_B = jnp.take_along_axis(logits_BxV, negative_B[:, None], axis=1)[:, 0]
    return logits_BxV, positive_logit_B, negative_logit_B
