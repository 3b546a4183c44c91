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


def answer_logits(unembed: Unembed, hidden_BxTxD: jax.Array, position_B: jax.Array, positive_B: jax.Array,
                  negative_B: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(logits_BxV at `position_B`, the positive label's logit_B, the negative label's logit_B)."""
    hidden_BxD = jnp.take_along_axis(hidden_BxTxD, position_B[:, None, None], axis=1)[:, 0]
    logits_BxV = unembed(hidden_BxD)
    positive_logit_B = jnp.take_along_axis(logits_BxV, positive_B[:, None], axis=1)[:, 0]
    negative_logit_B = jnp.take_along_axis(logits_BxV, negative_B[:, None], axis=1)[:, 0]
    return logits_BxV, positive_logit_B, negative_logit_B
