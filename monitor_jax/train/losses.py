"""Losses over one forward's hidden states [B, T, D].

Classification rows: the hidden state at each row's label position is
unembedded alone ([B, V] logits), cross-entropy against the label token. A
packed classification row has K label slots ([B, K] label fields, empty slots
labelled -1): the N = B·K gathered positions are scored the same way.
Instruction rows: token cross-entropy over weighted targets, unembedding the
sequence in chunks with the gradient computed alongside (a custom VJP), so
peak memory holds [B, chunk, V] logits, never [B, T, V], and no chunk is
recomputed; chunks without targets are skipped. Both return (sum, count) so
micro-batches and normalisations combine exactly.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from monitor_jax.data.encode import CLASSIFICATION, INSTRUCTION
from monitor_jax.model.answer import Unembed, Unembedding, answer_logits
NORMALIZATIONS = ("per_source", "pooled")


def label_slots(batch: dict) -> tuple[jax.Array, jax.Array]:
    """(mask_N, task_N): which of the N = B·K label slots hold a classification example ([B] label fields: K =
    1), and the task of each slot's row."""
    b = batch["kind"].shape[0]
    label_BxK = batch["label"].reshape(b, -1)
    mask_BxK = (batch["kind"] == CLASSIFICATION)[:, None] & (label_BxK >= 0)
    task_BxK = jnp.broadcast_to(batch["task_id"][:, None], label_BxK.shape)
    return mask_BxK.reshape(-1), task_BxK.reshape(-1)


def classification_terms(unembed: Unembed, hidden_BxTxD: jax.Array, batch: dict, two_token: bool = False):
    """Per label slot (N = B, or B·K for packed rows): (CE at the label position, correct (the log-odds sign
    agrees with the label), classification mask); instruction rows and empty slots are masked out.

    `two_token`: softmax over the positive and negative label tokens only,
    instead of the full vocabulary.
    """
    pos_BxK = jnp.maximum(batch["label_position"].reshape(hidden_BxTxD.shape[0], -1), 0)
    logits_NxV, pos_logit_N, neg_logit_N = answer_logits(unembed, hidden_BxTxD, pos_BxK, batch["positive_id"],
                                                         batch["negative_id"])
    n = logits_NxV.shape[0]
    target_N = jnp.take_along_axis(batch["targets"], pos_BxK, axis=1).reshape(n)
    target_logit_N = jnp.take_along_axis(logits_NxV, target_N[:, None], axis=1)[:, 0]
    if two_token:
        norm_N = jnp.logaddexp(pos_logit_N, neg_logit_N)
    else:
        norm_N = jax.nn.logsumexp(logits_NxV, axis=-1)
    mask_N = label_slots(batch)[0].astype(jnp.float32)
    correct_N = ((pos_logit_N > neg_logit_N) == (batch["label"].reshape(n) == 1)).astype(jnp.float32)
    return (norm_N - target_logit_N) * mask_N, correct_N * mask_N, mask_N


def classification_loss(unembed: Unembed, hidden_BxTxD: jax.Array, batch: dict, two_token: bool = False):
    """(summed CE, example count, summed correct) over classification examples."""
    ce_N, correct_N, mask_N = classification_terms(unembed, hidden_BxTxD, batch, two_token)
    return jnp.sum(ce_N), jnp.sum(mask_N), jnp.sum(correct_N)


def by_task(values_N: jax.Array, task_id_N: jax.Array, num_tasks: int) -> jax.Array:
    """[num_tasks] sums of masked per-slot values by their task id (instruction rows, whose id is past the
    classification tasks, carry zeros)."""
    return jax.ops.segment_sum(values_N, jnp.minimum(task_id_N, num_tasks - 1), num_segments=num_tasks)


def instruction_loss(unembed: Unembedding, hidden_BxTxD: jax.Array, batch: dict, chunk: int = 256):
    """(summed weighted CE, summed weight) over instruction rows, `chunk` positions of every row at a time.

    Each row's weighted positions are moved to its front first (a per-row
    gather, so the batch stays sharded), and chunks with no weighted position
    in any row are skipped at run time (`lax.cond`): a classification-only
    batch unembeds nothing here, and prompts (user turns) cost no logits.
    The gradient is computed with the loss, chunk by chunk (`_chunked_ce`), so
    neither pass holds more than [B, chunk, V] logits and none is recomputed.
    """
    b, t, d = hidden_BxTxD.shape
    chunk = min(chunk, t)
    if t % chunk:
        raise ValueError(f"sequence length {t} is not a multiple of loss.chunk_size={chunk}")
    weights_BxT = batch["weights"] * (batch["kind"] == INSTRUCTION)[:, None]
    order_BxT = jnp.argsort(weights_BxT == 0, axis=1, stable=True)       # weighted positions first
    hidden_BxTxD = jnp.take_along_axis(hidden_BxTxD, order_BxT[..., None], axis=1)
    targets_BxT = jnp.take_along_axis(batch["targets"], order_BxT, axis=1)
    weights_BxT = jnp.take_along_axis(weights_BxT, order_BxT, axis=1)
    n = t // chunk
    hidden_NxBxCxD = hidden_BxTxD.reshape(b, n, chunk, d).swapaxes(0, 1)
    targets_NxBxC = targets_BxT.reshape(b, n, chunk).swapaxes(0, 1)
    weights_NxBxC = weights_BxT.reshape(b, n, chunk).swapaxes(0, 1)
    return _chunked_ce(unembed, hidden_NxBxCxD, targets_NxBxC, weights_NxBxC), jnp.sum(weights_BxT)


def _chunk_terms(unembed: Unembedding, hidden_BxCxD, targets_BxC, weights_BxC):
    """A chunk's weighted CE sum and d loss / d raw logits [B, C, V] (softmax − one-hot, times the weights)."""
    logits_BxCxV, capped = unembed.logits(hidden_BxCxD)
    norm_BxC = jax.nn.logsumexp(logits_BxCxV, axis=-1)
    target_logit = jnp.take_along_axis(logits_BxCxV, targets_BxC[..., None], axis=-1)[..., 0]
    loss = jnp.sum((norm_BxC - target_logit) * weights_BxC)
    d_logits = jnp.exp(logits_BxCxV - norm_BxC[..., None])
    d_logits = (d_logits - jax.nn.one_hot(targets_BxC, d_logits.shape[-1], dtype=jnp.float32)) * weights_BxC[..., None]
    if capped is not None:
        d_logits = d_logits * (1.0 - capped * capped)
    return loss, d_logits


def _scan_chunks(unembed: Unembedding, hidden_NxBxCxD, targets_NxBxC, weights_NxBxC, with_grads: bool):
    """Sum of the chunks' losses; `with_grads`: also d hidden [N, B, C, D] and d weight (float32)."""
    def body(carry, xs):
        hidden_BxCxD, targets_BxC, weights_BxC = xs

        def compute(carry):
            total, d_weight = carry
            loss, d_logits = _chunk_terms(unembed, hidden_BxCxD, targets_BxC, weights_BxC)
            if not with_grads:
                return (total + loss, d_weight), None
            d_hidden = unembed.hidden_grad(d_logits)
            flat = lambda x: x.reshape(-1, x.shape[-1])  # noqa: E731
            return (total + loss, d_weight + unembed.weight_grad(flat(hidden_BxCxD), flat(d_logits))), d_hidden

        def skip(carry):
            return carry, (jnp.zeros_like(hidden_BxCxD, jnp.float32) if with_grads else None)

        return jax.lax.cond(jnp.any(weights_BxC > 0), compute, skip, carry)

    d_weight0 = jnp.zeros_like(unembed.weight, jnp.float32) if with_grads else jnp.zeros(())
    (total, d_weight), d_hidden = jax.lax.scan(body, (jnp.zeros((), jnp.float32), d_weight0),
                                               (hidden_NxBxCxD, targets_NxBxC, weights_NxBxC))
    return total, d_hidden, d_weight


@jax.custom_vjp
def _chunked_ce(unembed: Unembedding, hidden_NxBxCxD, targets_NxBxC, weights_NxBxC):
    """Summed weighted token CE over chunks of positions. Its gradient is computed in the forward pass, chunk by
    chunk (the loss is a plain sum, so d loss / d logits is known there): the backward pass only scales it, and
    no chunk's logits are kept or recomputed (6·D·V FLOPs per position, as with full logits)."""
    return _scan_chunks(unembed, hidden_NxBxCxD, targets_NxBxC, weights_NxBxC, with_grads=False)[0]


def _chunked_ce_fwd(unembed, hidden_NxBxCxD, targets_NxBxC, weights_NxBxC):
    total, d_hidden, d_weight = _scan_chunks(unembed, hidden_NxBxCxD, targets_NxBxC, weights_NxBxC, True)
    return total, (unembed, d_hidden.astype(hidden_NxBxCxD.dtype), d_weight, targets_NxBxC, weights_NxBxC)


def _chunked_ce_bwd(residuals, g):
    unembed, d_hidden, d_weight, targets, weights = residuals
    d_unembed = dataclasses.replace(unembed, weight=(g * d_weight).astype(unembed.weight.dtype))
    zero = lambda x: np.zeros(x.shape, jax.dtypes.float0) if jnp.issubdtype(x.dtype, jnp.integer) \
        else jnp.zeros_like(x)  # noqa: E731
    return d_unembed, (g * d_hidden).astype(d_hidden.dtype), zero(targets), zero(weights)


_chunked_ce.defvjp(_chunked_ce_fwd, _chunked_ce_bwd)


def combine(cls_sum, cls_count, sft_sum, sft_count, w_cls, w_sft, normalization: str):
    """total = w_cls·L_cls + w_sft·L_sft.

    per_source: each loss is averaged over its own targets. pooled: all targets
    averaged together, so a batch's one-token classification targets are diluted
    by its many instruction tokens (the research's dilution baseline).
    """
    if normalization == "per_source":
        return w_cls * cls_sum / jnp.maximum(cls_count, 1.0) + w_sft * sft_sum / jnp.maximum(sft_count, 1.0)
    if normalization == "pooled":
        return (w_cls * cls_sum + w_sft * sft_sum) / jnp.maximum(cls_count + sft_count, 1.0)
    raise ValueError(f"loss.normalization={normalization!r}; choose one of {NORMALIZATIONS}")
