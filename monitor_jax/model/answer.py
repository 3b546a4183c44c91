"""The monitor's readout: logits at the answer position only, shared by the classification loss and the scorer.

Gathering the hidden state at each row's answer (label) position before unembedding keeps the logits at
[B, V]: the [B, T, V] logits of a classification row are never built.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

Unembed = Callable[[jax.Array], jax.Array]   # hidden [..., D] -> float32 logits [..., V]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Unembedding:
    """The unembedding as data: the weight ([V, D] when tied to the embedding, else [D, V]), the compute dtype
    and the final logit soft-cap. Called on hidden states [..., D] it gives float32 logits [..., V]; the
    instruction loss also reads the weight to compute its gradient chunk by chunk (train/losses.py)."""
    weight: jax.Array
    vocab_first: bool = dataclasses.field(metadata=dict(static=True))
    dtype: str = dataclasses.field(metadata=dict(static=True))
    softcap: float | None = dataclasses.field(default=None, metadata=dict(static=True))

    def __call__(self, hidden_xD: jax.Array) -> jax.Array:
        return self.logits(hidden_xD)[0]

    def logits(self, hidden_xD: jax.Array) -> tuple[jax.Array, jax.Array | None]:
        """(float32 logits [..., V], tanh(raw / softcap) when soft-capped, for the derivative)."""
        w = self.weight.astype(self.dtype)
        spec = "...D,VD->...V" if self.vocab_first else "...D,DV->...V"
        logits = jnp.einsum(spec, hidden_xD.astype(self.dtype), w, preferred_element_type=jnp.float32)
        if not self.softcap:
            return logits, None
        capped = jnp.tanh(logits / self.softcap)
        return capped * self.softcap, capped

    def hidden_grad(self, d_logits_xV: jax.Array) -> jax.Array:
        """d loss / d hidden [..., D] (float32) from d loss / d logits (raw, before any soft-cap)."""
        spec = "...V,VD->...D" if self.vocab_first else "...V,DV->...D"
        return jnp.einsum(spec, d_logits_xV, self.weight.astype(jnp.float32))

    def weight_grad(self, hidden_NxD: jax.Array, d_logits_NxV: jax.Array) -> jax.Array:
        """d loss / d weight (float32, the weight's layout) from rows of hidden states and their d logits."""
        spec = "ND,NV->VD" if self.vocab_first else "ND,NV->DV"
        return jnp.einsum(spec, hidden_NxD.astype(jnp.float32), d_logits_NxV)


def answer_logits(unembed: Unembed, hidden_BxTxD: jax.Array, position: jax.Array, positive: jax.Array,
                  negative: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(logits_NxV at the answer positions, the positive label's logit_N, the negative label's logit_N).

    `position`, `positive`, `negative`: [B] (one answer a row, N = B) or [B, K] (packed rows with K answer
    slots, N = B·K, slot-major within a row).
    """
    b = hidden_BxTxD.shape[0]
    hidden_BxKxD = jnp.take_along_axis(hidden_BxTxD, position.reshape(b, -1)[..., None], axis=1)
    logits_NxV = unembed(hidden_BxKxD.reshape(-1, hidden_BxTxD.shape[-1]))
    positive_logit_N = jnp.take_along_axis(logits_NxV, positive.reshape(-1, 1), axis=1)[:, 0]
    negative_logit_N = jnp.take_along_axis(logits_NxV, negative.reshape(-1, 1), axis=1)[:, 0]
    return logits_NxV, positive_logit_N, negative_logit_N
