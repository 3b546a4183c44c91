"""Grouped-query attention: dense, or flash (blockwise over keys, O(T·block) memory).

Both take queries [B, T, K, G, H] (G query heads per KV head), keys and values
[B, S, K, H] and a `MaskInfo`, from which the mask of any block of keys is
computed on the fly: key s is visible to query t when both are in the same
non-padding segment, s is not after t, and (sliding layers) s is within the
window. The dense kernel materialises [B, K, G, T, S] scores and their softmax,
which is quadratic in the length; the flash kernel takes a block of queries at
a time against blocks of keys with an online softmax, and a custom backward
that recomputes each block's scores from the saved row maximum and normaliser,
so neither pass holds more than [B, K, G, block, block] scores and the
residuals are O(T) (Dao et al., 2022). Block pairs where no query can see any
key (above the causal diagonal, between different packed sequences, past a
sliding window, all padding) are skipped in both passes (`block_table`), so a
row of packed short examples costs about the sum of their own squares.
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

    def queries_padded(self, t: int) -> "MaskInfo":
        """Queries padded to length `t` with padding segments (they see nothing)."""
        pad = lambda x: jnp.pad(x, ((0, 0), (0, t - self.q_segment_BxT.shape[1])))  # noqa: E731
        return dataclasses.replace(self, q_segment_BxT=pad(self.q_segment_BxT), q_order_BxT=pad(self.q_order_BxT),
                                   q_pos_BxT=pad(self.q_pos_BxT))

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
    """[B, S, ...] -> [S / block, B, block, ...] for a scan over blocks."""
    b, s = x_BxSx___.shape[:2]
    return x_BxSx___.reshape(b, s // block, block, *x_BxSx___.shape[2:]).swapaxes(0, 1)


def _unblocks(x_NxBxCx___):
    n, b, c = x_NxBxCx___.shape[:3]
    return x_NxBxCx___.swapaxes(0, 1).reshape(b, n * c, *x_NxBxCx___.shape[3:])


def _ranges(x_BxS, keep_BxS, block: int):
    """Per block of every row: (min, max) of x over the kept positions; an empty block gives (big, -big)."""
    big = jnp.iinfo(jnp.int32).max
    x_BxNxC = x_BxS.reshape(x_BxS.shape[0], -1, block)
    keep = keep_BxS.reshape(x_BxNxC.shape)
    return jnp.where(keep, x_BxNxC, big).min(-1), jnp.where(keep, x_BxNxC, -big).max(-1)


def block_table(info: MaskInfo, block: int, window: int | None) -> jax.Array:
    """[T / block, S / block]: False where no query of the query block can see any key of the key block in any
    row (bounds on segment ids, order and positions, so never False where a pair is visible). Blocks above the
    causal diagonal, between different packed segments or outside a sliding window are skipped."""
    q_seg, k_seg = info.q_segment_BxT, info.k_segment_BxS
    q_lo, q_hi = _ranges(q_seg, q_seg != 0, block)
    k_lo, k_hi = _ranges(k_seg, k_seg != 0, block)
    visible = (q_lo[:, :, None] <= k_hi[:, None, :]) & (k_lo[:, None, :] <= q_hi[:, :, None])   # segments meet
    _, q_order_hi = _ranges(info.q_order_BxT, q_seg != 0, block)
    k_order_lo, _ = _ranges(info.k_order_BxS, k_seg != 0, block)
    visible &= k_order_lo[:, None, :] <= q_order_hi[:, :, None]                                   # causal
    if window:
        q_pos_lo, _ = _ranges(info.q_pos_BxT, q_seg != 0, block)
        _, k_pos_hi = _ranges(info.k_pos_BxS, k_seg != 0, block)
        visible &= (q_pos_lo[:, :, None] - k_pos_hi[:, None, :]) < window
    return visible.any(axis=0)


def _query_block(info: MaskInfo, start, size: int) -> MaskInfo:
    cut = lambda x: jax.lax.dynamic_slice_in_dim(x, start, size, axis=1)  # noqa: E731
    return dataclasses.replace(info, q_segment_BxT=cut(info.q_segment_BxT), q_order_BxT=cut(info.q_order_BxT),
                               q_pos_BxT=cut(info.q_pos_BxT))


def _forward(q, k, v, info, scale, softcap, window, block):
    """Online softmax over key blocks, one query block at a time, skipping block pairs `block_table` rules
    out: output [B, K, G, T, H] f32, row max and normaliser [B, K, G, T]."""
    b, t, kh, g, h = q.shape
    table = block_table(info, block, window)
    k_starts = jnp.arange(0, k.shape[1], block)

    def q_body(_, xs):
        i, q_start, q_BxCxKxGxH = xs
        q_info = _query_block(info, q_start, block)

        def k_body(carry, ys):
            j, k_start, k_BxCxKxH, v_BxCxKxH = ys

            def compute(carry):
                max_BxKxGxC, norm_BxKxGxC, acc_BxKxGxCxH = carry
                logits, visible, _ = _masked_scores(q_BxCxKxGxH, k_BxCxKxH, q_info, k_start, scale, softcap, window)
                new_max = jnp.maximum(max_BxKxGxC, logits.max(axis=-1))
                probs = jnp.where(visible, jnp.exp(logits - new_max[..., None]), 0.0)
                rescale = jnp.exp(max_BxKxGxC - new_max)   # 0 once a visible key is seen after masked-only blocks
                norm_BxKxGxC = norm_BxKxGxC * rescale + probs.sum(axis=-1)
                acc_BxKxGxCxH = acc_BxKxGxCxH * rescale[..., None] + jnp.einsum(
                    "BKGTC,BCKH->BKGTH", probs.astype(v.dtype), v_BxCxKxH, preferred_element_type=jnp.float32)
                return new_max, norm_BxKxGxC, acc_BxKxGxCxH

            return jax.lax.cond(table[i, j], compute, lambda c: c, carry), None

        init = (jnp.full((b, kh, g, block), NEG_INF, jnp.float32), jnp.zeros((b, kh, g, block), jnp.float32),
                jnp.zeros((b, kh, g, block, h), jnp.float32))
        (max_, norm, acc), _ = jax.lax.scan(
            k_body, init, (jnp.arange(len(k_starts)), k_starts, _blocks(k, block), _blocks(v, block)))
        # norm is 0 only where no key was visible, and there acc is 0 too.
        return None, (acc / jnp.maximum(norm, 1e-30)[..., None], max_, norm)

    q_starts = jnp.arange(0, t, block)
    _, (out, max_, norm) = jax.lax.scan(q_body, None, (jnp.arange(len(q_starts)), q_starts, _blocks(q, block)))
    # [N, B, K, G, C, ...] -> [B, K, G, N·C, ...]
    out = jnp.moveaxis(out, 0, 3).reshape(b, kh, g, t, h)
    return out, jnp.moveaxis(max_, 0, 3).reshape(b, kh, g, t), jnp.moveaxis(norm, 0, 3).reshape(b, kh, g, t)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7))
def _flash(q, k, v, info, scale, softcap, window, block):
    out_BxKxGxTxH, _, _ = _forward(q, k, v, info, scale, softcap, window, block)
    return out_BxKxGxTxH.astype(q.dtype)


def _flash_fwd(q, k, v, info, scale, softcap, window, block):
    out, max_, norm = _forward(q, k, v, info, scale, softcap, window, block)
    out = out.astype(q.dtype)
    return out, (q, k, v, info, out, max_, norm)


def _flash_bwd(scale, softcap, window, block, residuals, d_out_BxKxGxTxH):
    """Recompute each visible block pair's probabilities; dS = P ∘ (dP − rowsum(dO ∘ O)). One query block at a
    time: its dq is carried over the key blocks, dk and dv are summed over the query blocks."""
    q, k, v, info, out, max_BxKxGxT, norm_BxKxGxT = residuals
    b, t, kh, g, h = q.shape
    table = block_table(info, block, window)
    d_out = d_out_BxKxGxTxH.astype(jnp.float32)
    delta_BxKxGxT = jnp.sum(d_out * out.astype(jnp.float32), axis=-1)
    k_starts = jnp.arange(0, k.shape[1], block)

    def per_query_block(x_BxKxGxT___):   # [B, K, G, T, ...] -> [N, B, K, G, C, ...]
        x = x_BxKxGxT___.reshape(b, kh, g, t // block, block, *x_BxKxGxT___.shape[4:])
        return jnp.moveaxis(x, 3, 0)

    def q_body(carry, xs):
        dk_BxSxKxH, dv_BxSxKxH = carry
        i, q_start, q_BxCxKxGxH, d_out_c, delta_c, max_c, norm_c = xs
        q_info = _query_block(info, q_start, block)

        def k_body(dq_BxCxKxGxH, ys):
            j, k_start, k_BxCxKxH, v_BxCxKxH = ys

            def compute(dq_BxCxKxGxH):
                logits, visible, capped = _masked_scores(q_BxCxKxGxH, k_BxCxKxH, q_info, k_start, scale, softcap,
                                                         window)
                probs = jnp.where(visible, jnp.exp(logits - max_c[..., None]), 0.0) / jnp.maximum(
                    norm_c, 1e-30)[..., None]
                dv = jnp.einsum("BKGTC,BKGTH->BCKH", probs, d_out_c)
                d_probs = jnp.einsum("BKGTH,BCKH->BKGTC", d_out_c, v_BxCxKxH.astype(jnp.float32))
                d_logits = probs * (d_probs - delta_c[..., None])
                if softcap:
                    d_logits = d_logits * (1.0 - capped * capped)
                d_logits = d_logits * scale
                dq_BxCxKxGxH = dq_BxCxKxGxH + jnp.einsum("BKGTC,BCKH->BTKGH", d_logits,
                                                         k_BxCxKxH.astype(jnp.float32))
                dk = jnp.einsum("BKGTC,BTKGH->BCKH", d_logits, q_BxCxKxGxH.astype(jnp.float32))
                return dq_BxCxKxGxH, (dk, dv)

            def skip(dq_BxCxKxGxH):
                zeros = jnp.zeros(k_BxCxKxH.shape, jnp.float32)
                return dq_BxCxKxGxH, (zeros, zeros)

            return jax.lax.cond(table[i, j], compute, skip, dq_BxCxKxGxH)

        dq, (dk_blocks, dv_blocks) = jax.lax.scan(
            k_body, jnp.zeros(q_BxCxKxGxH.shape, jnp.float32),
            (jnp.arange(len(k_starts)), k_starts, _blocks(k, block), _blocks(v, block)))
        return (dk_BxSxKxH + _unblocks(dk_blocks), dv_BxSxKxH + _unblocks(dv_blocks)), dq

    q_starts = jnp.arange(0, t, block)
    zeros = jnp.zeros(k.shape, jnp.float32)
    (dk, dv), dq_blocks = jax.lax.scan(
        q_body, (zeros, zeros), (jnp.arange(len(q_starts)), q_starts, _blocks(q, block), per_query_block(d_out),
                                 per_query_block(delta_BxKxGxT), per_query_block(max_BxKxGxT),
                                 per_query_block(norm_BxKxGxT)))
    d_info = jax.tree.map(lambda x: None, info)
    return (_unblocks(dq_blocks).astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), d_info)


_flash.defvjp(_flash_fwd, _flash_bwd)


def flash_attention(q_BxTxKxGxH, k_BxSxKxH, v_BxSxKxH, info: MaskInfo, *, scale: float,
                    softcap: float | None = None, window: int | None = None, block: int = 512):
    """Attention output [B, T, K, G, H], `block` queries against `block` keys at a time (queries and keys padded
    to a multiple), skipping the block pairs where nothing is visible (`block_table`)."""
    t, s = q_BxTxKxGxH.shape[1], k_BxSxKxH.shape[1]
    if s <= block:  # one block: the dense kernel is the same computation
        return dense_attention(q_BxTxKxGxH, k_BxSxKxH, v_BxSxKxH, info, scale=scale, softcap=softcap, window=window)
    padded_s, padded_t = -(-s // block) * block, -(-t // block) * block
    if padded_s != s:
        pad = ((0, 0), (0, padded_s - s), (0, 0), (0, 0))
        k_BxSxKxH, v_BxSxKxH, info = jnp.pad(k_BxSxKxH, pad), jnp.pad(v_BxSxKxH, pad), info.padded(padded_s)
    if padded_t != t:   # padding queries (segment 0) see nothing and are cut off below
        q_BxTxKxGxH = jnp.pad(q_BxTxKxGxH, ((0, 0), (0, padded_t - t), (0, 0), (0, 0), (0, 0)))
        info = info.queries_padded(padded_t)
    out_BxKxGxTxH = _flash(q_BxTxKxGxH, k_BxSxKxH, v_BxSxKxH, info, scale, softcap, window, block)
    return out_BxKxGxTxH[:, :, :, :t].transpose(0, 3, 1, 2, 4)


KERNELS = {"dense": dense_attention, "flash": flash_attention}
