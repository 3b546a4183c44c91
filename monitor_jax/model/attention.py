"""Grouped-query attention: dense, or flash (blockwise over keys, O(T·block) memory).

Both take queries [B, T, K, G, H] (G query heads per KV head), keys and values
[B, S, K, H] and a `MaskInfo`, from which the mask of any block of keys is
computed on the fly: key s is visible to query t when both are in the same
non-padding segment, s is not after t, and (sliding layers) s is within the
window. The dense kernel materialises [B, K, G, T, S] scores and their softmax,
which is quadratic in the length; the flash kernel scans key blocks with an
online softmax and a custom backward that recomputes each block's scores from
the saved row maximum and normaliser, so neither pass holds more than
[B, K, G, T, block] scores and the residuals are O(T) (Dao et al., 2022).
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

# Finite, so masked scores never make inf - inf = NaN. A query that sees no key
# (a padding query) gets a zero output in both kernels, whatever the key padding.
NEG_INF = -0.7 * float(jnp.finfo(jnp.float32).max)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class MaskInfo:
    """Per-token segment ids (0 = padding), order (causality) and positions (the sliding window)."""
    q_segment_BxT: jax.Array
    k_segment_BxS: jax.Array
    q_order_BxT: jax.Array
    k_order_BxS: jax.Array
    q_pos_BxT: jax.Array
    k_pos_BxS: jax.Array

    def block(self, start, size: int, window: int | None) -> jax.Array:
        """Visibility [B, T, size] of keys [start, start + size)."""
        cut = lambda x: jax.lax.dynamic_slice_in_dim(x, start, size, axis=1)[:, None, :]  # noqa: E731
        k_seg, k_order, k_pos = cut(self.k_segment_BxS), cut(self.k_order_BxS), cut(self.k_pos_BxS)
        visible = (self.q_segment_BxT[:, :, None] == k_seg) & (k_seg != 0) & (k_order <= self.q_order_BxT[:, :, None])
        if window:
            visible &= (self.q_pos_BxT[:, :, None] - k_pos) < window
        return visible

    def padded(self, s: int) -> "MaskInfo":
        """Keys padded to length `s` with padding segments (never visible)."""
        extra = s - self.k_segment_BxS.shape[1]
        pad = lambda x: jnp.pad(x, ((0, 0), (0, extra)))  # noqa: E731
        return dataclasses.replace(self, k_segment_BxS=pad(self.k_segment_BxS), k_order_BxS=pad(self.k_order_BxS),
                                   k_pos_BxS=pad(self.k_pos_BxS))


def _masked_scores(q_BxTxKxGxH, k_BxCxKxH, info: MaskInfo, start, scale: float, softcap: float | None,
                   window: int | None):
    """Scores [B, K, G, T, C] in float32 of keys [start, start + C), NEG_INF where not visible.

    Also returns the visibility [B, 1, 1, T, C] and, with a soft-cap, its tanh (for the backward pass).
    """
    scores = jnp.einsum("BTKGH,BCKH->BKGTC", q_BxTxKxGxH, k_BxCxKxH, preferred_element_type=jnp.float32) * scale
    capped = None
    if softcap:
        capped = jnp.tanh(scores / softcap)
        scores = capped * softcap
    visible = info.block(start, k_BxCxKxH.shape[1], window)[:, None, None]
    return jnp.where(visible, scores, NEG_INF), visible, capped


def dense_attention(q_BxTxKxGxH, k_BxSxKxH, v_BxSxKxH, info: MaskInfo, *, scale: float,
                    softcap: float | None = None, window: int | None = None, block: int = 0):
    """Attention output [B, T, K, G, H] through the full [B, K, G, T, S] softmax."""
    del block
    logits_BxKxGxTxS, visible, _ = _masked_scores(q_BxTxKxGxH, k_BxSxKxH, info, 0, scale, softcap, window)
    probs_BxKxGxTxS = jnp.where(visible, jax.nn.softmax(logits_BxKxGxTxS, axis=-1), 0.0)
    probs_BxKxGxTxS = probs_BxKxGxTxS.astype(v_BxSxKxH.dtype)
    return jnp.einsum("BKGTS,BSKH->BTKGH", probs_BxKxGxTxS, v_BxSxKxH)


def cached_attention(q_BxTxKxGxH, k_BxKxSxH, v_BxKxSxH, info: MaskInfo, *, scale: float,
                     softcap: float | None = None, window: int | None = None):
    """Decoding: a few queries against a head-major KV cache [B, K, S, H]; output [B, K, G, T, H].

    Dense (T is small). The cache is read in its own layout by both products, so a step copies no keys.
    """
    b, t, k, g, h = q_BxTxKxGxH.shape
    q_BxKxGTxH = q_BxTxKxGxH.transpose(0, 2, 3, 1, 4).reshape(b, k, g * t, h)
    scores = jnp.einsum("BKQH,BKSH->BKQS", q_BxKxGTxH, k_BxKxSxH, preferred_element_type=jnp.float32) * scale
    if softcap:
        scores = jnp.tanh(scores / softcap) * softcap
    visible_BxTxS = info.block(0, k_BxKxSxH.shape[2], window)
    visible_Bx1xGTxS = jnp.broadcast_to(visible_BxTxS[:, None, None], (b, 1, g, t, visible_BxTxS.shape[-1])).reshape(
        b, 1, g * t, -1)
    scores = jnp.where(visible_Bx1xGTxS, scores, NEG_INF)
    probs = jnp.where(visible_Bx1xGTxS, jax.nn.softmax(scores, axis=-1), 0.0).astype(v_BxKxSxH.dtype)
    out_BxKxGTxH = jnp.einsum("BKQS,BKSH->BKQH", probs, v_BxKxSxH)
    return out_BxKxGTxH.reshape(b, k, g, t, h)


def _blocks(x_BxSx___, block: int):
    """[B, S, ...] -> [S / block, B, block, ...] for a scan over key blocks."""
    b, s = x_BxSx___.shape[:2]
    return x_BxSx___.reshape(b, s // block, block, *x_BxSx___.shape[2:]).swapaxes(0, 1)


def _unblocks(x_NxBxCx___):
    n, b, c = x_NxBxCx___.shape[:3]
    return x_NxBxCx___.swapaxes(0, 1).reshape(b, n * c, *x_NxBxCx___.shape[3:])


def _forward(q, k, v, info, scale, softcap, window, block):
    """Online softmax over key blocks: output [B, K, G, T, H] f32, row max and normaliser [B, K, G, T]."""
    b, t, kh, g, h = q.shape

    def body(carry, xs):
        max_BxKxGxT, norm_BxKxGxT, acc_BxKxGxTxH = carry
        start, k_BxCxKxH, v_BxCxKxH = xs
        logits_BxKxGxTxC, visible_BxTxC, _ = _masked_scores(q, k_BxCxKxH, info, start, scale, softcap, window)
        new_max = jnp.maximum(max_BxKxGxT, logits_BxKxGxTxC.max(axis=-1))
        probs_BxKxGxTxC = jnp.where(visible_BxTxC, jnp.exp(logits_BxKxGxTxC - new_max[..., None]), 0.0)
        rescale = jnp.exp(max_BxKxGxT - new_max)   # 0 once a visible key is seen after masked-only blocks
        norm_BxKxGxT = norm_BxKxGxT * rescale + probs_BxKxGxTxC.sum(axis=-1)
        acc_BxKxGxTxH = acc_BxKxGxTxH * rescale[..., None] + jnp.einsum(
            "BKGTC,BCKH->BKGTH", probs_BxKxGxTxC.astype(v.dtype), v_BxCxKxH, preferred_element_type=jnp.float32)
        return (new_max, norm_BxKxGxT, acc_BxKxGxTxH), None

    init = (jnp.full((b, kh, g, t), NEG_INF, jnp.float32), jnp.zeros((b, kh, g, t), jnp.float32),
            jnp.zeros((b, kh, g, t, h), jnp.float32))
    starts = jnp.arange(0, k.shape[1], block)
    (max_, norm, acc), _ = jax.lax.scan(body, init, (starts, _blocks(k, block), _blocks(v, block)))
    # norm is 0 only where no key was visible, and there acc is 0 too.
    return acc / jnp.maximum(norm, 1e-30)[..., None], max_, norm


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7))
def _flash(q, k, v, info, scale, softcap, window, block):
    out_BxKxGxTxH, _, _ = _forward(q, k, v, info, scale, softcap, window, block)
    return out_BxKxGxTxH.astype(q.dtype)


def _flash_fwd(q, k, v, info, scale, softcap, window, block):
    out, max_, norm = _forward(q, k, v, info, scale, softcap, window, block)
    out = out.astype(q.dtype)
    return out, (q, k, v, info, out, max_, norm)


def _flash_bwd(scale, softcap, window, block, residuals, d_out_BxKxGxTxH):
    """Recompute each block's probabilities; dS = P ∘ (dP − rowsum(dO ∘ O))."""
    q, k, v, info, out, max_BxKxGxT, norm_BxKxGxT = residuals
    d_out = d_out_BxKxGxTxH.astype(jnp.float32)
    delta_BxKxGxT = jnp.sum(d_out * out.astype(jnp.float32), axis=-1)

    def body(dq_BxTxKxGxH, xs):
        start, k_BxCxKxH, v_BxCxKxH = xs
        logits_BxKxGxTxC, visible_BxTxC, capped = _masked_scores(q, k_BxCxKxH, info, start, scale, softcap,
                                                                 window)
        probs = jnp.where(visible_BxTxC, jnp.exp(logits_BxKxGxTxC - max_BxKxGxT[..., None]), 0.0) / jnp.maximum(
            norm_BxKxGxT, 1e-30)[..., None]
        dv_BxCxKxH = jnp.einsum("BKGTC,BKGTH->BCKH", probs, d_out)
        d_probs = jnp.einsum("BKGTH,BCKH->BKGTC", d_out, v_BxCxKxH.astype(jnp.float32))
        d_logits = probs * (d_probs - delta_BxKxGxT[..., None])
        if softcap:
            d_logits = d_logits * (1.0 - capped * capped)
        d_logits = d_logits * scale
        dq_BxTxKxGxH = dq_BxTxKxGxH + jnp.einsum("BKGTC,BCKH->BTKGH", d_logits, k_BxCxKxH.astype(jnp.float32))
        dk_BxCxKxH = jnp.einsum("BKGTC,BTKGH->BCKH", d_logits, q.astype(jnp.float32))
        return dq_BxTxKxGxH, (dk_BxCxKxH, dv_BxCxKxH)

    starts = jnp.arange(0, k.shape[1], block)
    dq, (dk_blocks, dv_blocks) = jax.lax.scan(body, jnp.zeros(q.shape, jnp.float32),
                                              (starts, _blocks(k, block), _blocks(v, block)))
    d_info = jax.tree.map(lambda x: None, info)
    return (dq.astype(q.dtype), _unblocks(dk_blocks).astype(k.dtype), _unblocks(dv_blocks).astype(v.dtype), d_info)


_flash.defvjp(_flash_fwd, _flash_bwd)


def flash_attention(q_BxTxKxGxH, k_BxSxKxH, v_BxSxKxH, info: MaskInfo, *, scale: float,
                    softcap: float | None = None, window: int | None = None, block: int = 512):
    """Attention output [B, T, K, G, H], scanning keys `block` at a time (padded to a multiple)."""
    s = k_BxSxKxH.shape[1]
    if s <= block:  # one block: the dense kernel is the same computation
        return dense_attention(q_BxTxKxGxH, k_BxSxKxH, v_BxSxKxH, info, scale=scale, softcap=softcap, window=window)
    padded = -(-s // block) * block
    if padded != s:
        pad = ((0, 0), (0, padded - s), (0, 0), (0, 0))
        k_BxSxKxH, v_BxSxKxH, info = jnp.pad(k_BxSxKxH, pad), jnp.pad(v_BxSxKxH, pad), info.padded(padded)
    out_BxKxGxTxH = _flash(q_BxTxKxGxH, k_BxSxKxH, v_BxSxKxH, info, scale, softcap, window, block)
    return out_BxKxGxTxH.transpose(0, 3, 1, 2, 4)


KERNELS = {"dense": dense_attention, "flash": flash_attention}
