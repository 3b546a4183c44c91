"""Losses over one forward's hidden states [B, T, D].

Classification rows: the hidden state at each row's label position is
unembedded alone ([B, V] logits), cross-entropy against the label token. A
packed classification row has K label slots ([B, K] label fields, empty slots
labelled -1): the N = B·K gathered positions are scored the same way.
Instruction rows: token cross-entropy over weighted targets, unembedding the
sequence in chunks of length under `jax.checkpoint`, so peak memory holds
[B, chunk, V] logits, never [B, T, V]; chunks without targets are skipped. Both return (sum, count) so micro-batches
and normalisations combine exactly.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from monitor_jax.data.encode import CLASSIFICATION, INSTRUCTION
from monitor_jax.model.answer import Unembed, answer_logits
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
    b, d = hidden_BxTxD.shape[0], hidden_BxTxD.shape[-1]
    pos_BxK = jnp.maximum(batch["label_position"].reshape(b, -1), 0)
    hidden_Nx1xD = jnp.take_along_axis(hidden_BxTxD, pos_BxK[..., None], axis=1).reshape(-1, 1, d)
    n = hidden_Nx1xD.shape[0]
    logits_NxV, pos_logit_N, neg_logit_N = answer_logits(unembed, hidden_Nx1xD, jnp.zeros(n, jnp.int32),
                                                         batch["positive_id"].reshape(n),
                                                         batch["negative_id"].reshape(n))
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


def instruction_loss(unembed: Unembed, hidden_BxTxD: jax.Array, batch: dict, chunk: int = 256):
    """(summed weighted CE, summed weight) over instruction rows, `chunk` positions of every row at a time.

    Each row's weighted positions are moved to its front first (a per-row
    gather, so the batch stays sharded), and chunks with no weighted position
    in any row are skipped at run time (`lax.cond`): a classification-only
    batch unembeds nothing here, and prompts (user turns) cost no logits.
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

    def chunk_loss(hidden_BxCxD, targets_BxC, weights_BxC):
        logits_BxCxV = unembed(hidden_BxCxD)
        target_logit = jnp.take_along_axis(logits_BxCxV, targets_BxC[..., None], axis=-1)[..., 0]
        return jnp.sum((jax.nn.logsumexp(logits_BxCxV, axis=-1) - target_logit) * weights_BxC)

    # Checkpoint outside the cond: the backward pass recomputes a chunk's logits
    # instead of keeping anything [B, C, V]-sized per chunk.
    @jax.checkpoint
    def maybe_chunk_loss(xs):
        return jax.lax.cond(jnp.any(xs[2] > 0), chunk_loss, lambda *_: jnp.zeros((), jnp.float32), *xs)

    def body(total, xs):
        return total + maybe_chunk_loss(xs), None

    total, _ = jax.lax.scan(body, jnp.zeros((), jnp.float32), (hidden_NxBxCxD, targets_NxBxC, weights_NxBxC))
    return total, jnp.sum(weights_BxT)


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
