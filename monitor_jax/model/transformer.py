"""One Flax NNX decoder for Llama 3.x, Qwen2.5, Qwen3 and Gemma 3 text.

Every parameter declares its logical axes where it is created
(`logical_axes=...`); `parallel/sharding.py` maps them to mesh axes. The
forward is split in two so the trainer can gather hidden states at label
positions before unembedding: `hidden_states` -> [B, T, D], `unembed` -> logits.

Attention masks come from segment ids (0 = padding, 1.. = packed sequences) and
positions: right padding with an attention mask is one segment per row. The
attention kernel (`model/attention.py`: flash, or dense) builds the mask from a
`MaskInfo` of per-token ids (flash: one key block at a time), so no [B, T, S]
mask is passed between layers.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from monitor_jax.model.answer import Unembedding
from monitor_jax.model.attention import KERNELS, MaskInfo, cached_attention
from monitor_jax.model.config import ModelConfig, rope_inv_freq
from monitor_jax.parallel.sharding import constrain

def _remat_block(block: nnx.Module, remat: str):
    """block(x, sin, cos, info)[0] under jax.checkpoint, its state an explicit argument. A block changes no
    state when it runs, so nothing flows back, and jax.checkpoint needs none of nnx.remat's bookkeeping, which
    failed on a LoRA model ("Cannot mutate Param from a different trace level": the frozen base and the trained
    adapters are merged from two trace levels)."""
    graphdef, state = nnx.split(block)

    def body(state, x_BxTxD, sin, cos, info):
        return nnx.merge(graphdef, state)(x_BxTxD, sin, cos, info)[0]

    return functools.partial(jax.checkpoint(body, policy=_REMAT[remat]), state)


_REMAT = {
    "full": None,
    "dots": jax.checkpoint_policies.dots_saveable,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def _param(rngs: nnx.Rngs, init, shape: Sequence[int], axes: tuple[str | None, ...], dtype: str):
    return nnx.Param(init(rngs.params(), tuple(shape), jnp.dtype(dtype)), logical_axes=axes)


_normal = nnx.initializers.normal(0.02)


class Einsum(nnx.Module):
    """A projection `einsum(spec, x, kernel)` (+ bias over the output dims), and a LoRA adapter when one is
    added (model/lora.py)."""

    def __init__(self, spec: str, shape: Sequence[int], axes: tuple[str | None, ...], cfg: ModelConfig,
                 *, bias_dims: int = 0, rngs: nnx.Rngs):
        self.spec, self.dtype = spec, jnp.dtype(cfg.dtype)
        self.kernel = _param(rngs, _normal, shape, axes, cfg.param_dtype)
        self.bias = (_param(rngs, nnx.initializers.zeros, shape[-bias_dims:], axes[-bias_dims:], cfg.param_dtype)
                     if bias_dims else None)
        self.lora = nnx.data(None)      # model/lora.py: add_adapters sets an Adapter here

    def __call__(self, x: jax.Array) -> jax.Array:
        y = jnp.einsum(self.spec, x.astype(self.dtype), self.kernel[...].astype(self.dtype))
        if self.lora is not None:
            y = y + self.lora(x)
        return y if self.bias is None else y + self.bias[...].astype(self.dtype)


class RMSNorm(nnx.Module):
    """RMSNorm in float32; scale is (offset + w) (Gemma stores w around 0)."""

    def __init__(self, dim: int, cfg: ModelConfig, *, rngs: nnx.Rngs):
        init = nnx.initializers.zeros if cfg.norm_offset else nnx.initializers.ones
        self.scale = _param(rngs, init, (dim,), ("norm",), cfg.param_dtype)
        self.eps, self.offset = cfg.norm_eps, cfg.norm_offset

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        if self.offset:  # Gemma: scale in float32, then cast
            return (normed * (self.offset + self.scale[...].astype(jnp.float32))).astype(x.dtype)
        # Llama/Qwen: cast, then scale in the input dtype (as transformers does)
        return self.scale[...].astype(x.dtype) * normed.astype(x.dtype)


def apply_rope(x_BxTxNxH: jax.Array, sin_BxTxK: jax.Array, cos_BxTxK: jax.Array) -> jax.Array:
    """Rotate-half RoPE (the transformers convention for all four families)."""
    x = x_BxTxNxH.astype(jnp.float32)
    x1, x2 = jnp.split(x, 2, axis=-1)
    sin, cos = sin_BxTxK[:, :, None, :], cos_BxTxK[:, :, None, :]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x_BxTxNxH.dtype)


def rope_tables(cfg: ModelConfig, positions_BxT: jax.Array, local: bool) -> tuple[jax.Array, jax.Array]:
    inv_freq_K = jnp.asarray(rope_inv_freq(cfg, local=local))
    angles_BxTxK = positions_BxT.astype(jnp.float32)[..., None] * inv_freq_K
    return jnp.sin(angles_BxTxK), jnp.cos(angles_BxTxK)


class Attention(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        d, n, k, h = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        b = 2 if cfg.qkv_bias else 0
        self.cfg = cfg
        self.q_proj = Einsum("BTD,DNH->BTNH", (d, n, h), ("embed", "heads", "head_dim"), cfg, bias_dims=b, rngs=rngs)
        self.k_proj = Einsum("BTD,DKH->BTKH", (d, k, h), ("embed", "kv_heads", "head_dim"), cfg, bias_dims=b,
                             rngs=rngs)
        self.v_proj = Einsum("BTD,DKH->BTKH", (d, k, h), ("embed", "kv_heads", "head_dim"), cfg, bias_dims=b,
                             rngs=rngs)
        self.o_proj = Einsum("BTNH,NHD->BTD", (n, h, d), ("heads", "head_dim", "embed"), cfg, rngs=rngs)
        self.q_norm = RMSNorm(h, cfg, rngs=rngs) if cfg.qk_norm else None
        self.k_norm = RMSNorm(h, cfg, rngs=rngs) if cfg.qk_norm else None

    def __call__(self, x_BxTxD, sin_BxTxK, cos_BxTxK, info: MaskInfo, window, kv=None, end=None):
        cfg, rules = self.cfg, self.cfg.sharding_rules
        q_BxTxNxH, k_BxTxKxH, v_BxTxKxH = self.q_proj(x_BxTxD), self.k_proj(x_BxTxD), self.v_proj(x_BxTxD)
        if self.q_norm is not None:
            q_BxTxNxH, k_BxTxKxH = self.q_norm(q_BxTxNxH), self.k_norm(k_BxTxKxH)
        q_BxTxNxH = constrain(apply_rope(q_BxTxNxH, sin_BxTxK, cos_BxTxK), ("batch", "length", "heads", "head_dim"), rules)
        k_BxTxKxH = apply_rope(k_BxTxKxH, sin_BxTxK, cos_BxTxK)
        b, t, n, h = q_BxTxNxH.shape
        kv_heads = k_BxTxKxH.shape[2]
        q_BxTxKxGxH = q_BxTxNxH.reshape(b, t, kv_heads, n // kv_heads, h)  # GQA: G query heads per KV head
        if kv is None:   # training, scoring, prefill: the configured kernel over this call's keys
            k_BxTxKxH = constrain(k_BxTxKxH, ("batch", "length", "kv_heads", "head_dim"), rules)
            v_BxTxKxH = constrain(v_BxTxKxH, ("batch", "length", "kv_heads", "head_dim"), rules)
            out_BxTxKxGxH = KERNELS[cfg.attention](q_BxTxKxGxH, k_BxTxKxH, v_BxTxKxH, info, scale=cfg.scale,
                                                   softcap=cfg.attn_logit_softcap, window=window,
                                                   block=cfg.attention_block)
            return self._out(out_BxTxKxGxH.reshape(b, t, n, h)), (k_BxTxKxH, v_BxTxKxH)
        # Decoding: write this step's keys/values at the shared slot `end` (an in-place slice update) of the
        # head-major cache [B, K, S, H], the layout both attention products read without a transpose.
        write = lambda c, x_BxTxKxH: constrain(  # noqa: E731
            jax.lax.dynamic_update_slice_in_dim(c, x_BxTxKxH.swapaxes(1, 2).astype(c.dtype), end, axis=2),
            ("batch", "kv_heads", "cache_length", "head_dim"), rules)
        k_BxKxSxH, v_BxKxSxH = write(kv[0], k_BxTxKxH), write(kv[1], v_BxTxKxH)
        out_BxKxGxTxH = cached_attention(q_BxTxKxGxH, k_BxKxSxH.astype(q_BxTxNxH.dtype),
                                         v_BxKxSxH.astype(q_BxTxNxH.dtype), info, scale=cfg.scale,
                                         softcap=cfg.attn_logit_softcap, window=window)
        out_BxTxNxH = out_BxKxGxTxH.transpose(0, 3, 1, 2, 4).reshape(b, t, n, h)
        return self._out(out_BxTxNxH), (k_BxKxSxH, v_BxKxSxH)

    def _out(self, x_BxTxNxH):
        """o_proj with (N, H) merged into one contracting dim: as a two-dim contraction, jnp.einsum orders
        it (H, N), and XLA then copies the [N, H, D] kernel into that order on every call."""
        b, t, n, h = x_BxTxNxH.shape
        w_FxD = self.o_proj.kernel[...].reshape(n * h, -1).astype(self.o_proj.dtype)
        y_BxTxD = jnp.einsum("BTF,FD->BTD", x_BxTxNxH.reshape(b, t, n * h).astype(self.o_proj.dtype), w_FxD)
        return y_BxTxD if self.o_proj.lora is None else y_BxTxD + self.o_proj.lora(x_BxTxNxH)


class MLP(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        d, f = cfg.embed_dim, cfg.mlp_dim
        self.cfg = cfg
        self.gate_proj = Einsum("BTD,DF->BTF", (d, f), ("embed", "mlp"), cfg, rngs=rngs)
        self.up_proj = Einsum("BTD,DF->BTF", (d, f), ("embed", "mlp"), cfg, rngs=rngs)
        self.down_proj = Einsum("BTF,FD->BTD", (f, d), ("mlp", "embed"), cfg, rngs=rngs)

    def __call__(self, x_BxTxD: jax.Array) -> jax.Array:
        gate_BxTxF = self.gate_proj(x_BxTxD)
        act = jax.nn.silu(gate_BxTxF) if self.cfg.activation == "silu" else jax.nn.gelu(gate_BxTxF, approximate=True)
        h_BxTxF = constrain(act * self.up_proj(x_BxTxD), ("batch", "length", "mlp"), self.cfg.sharding_rules)
        return self.down_proj(h_BxTxF)


class Block(nnx.Module):
    """Pre-norm decoder layer; Gemma adds the post-attention and post-MLP norms."""

    def __init__(self, cfg: ModelConfig, layer: int, *, rngs: nnx.Rngs):
        d = cfg.embed_dim
        self.cfg, self.sliding = cfg, cfg.layer_type(layer) == "sliding"
        self.attn_pre_norm = RMSNorm(d, cfg, rngs=rngs)
        self.attn = Attention(cfg, rngs=rngs)
        self.attn_post_norm = RMSNorm(d, cfg, rngs=rngs) if cfg.sandwich_norm else None
        self.mlp_pre_norm = RMSNorm(d, cfg, rngs=rngs)
        self.mlp = MLP(cfg, rngs=rngs)
        self.mlp_post_norm = RMSNorm(d, cfg, rngs=rngs) if cfg.sandwich_norm else None

    def __call__(self, x_BxTxD, sin_BxTxK, cos_BxTxK, info: MaskInfo, kv=None, end=None):
        window = self.cfg.sliding_window if self.sliding else None
        attn_BxTxD, new_kv = self.attn(self.attn_pre_norm(x_BxTxD), sin_BxTxK, cos_BxTxK, info, window, kv, end)
        if self.attn_post_norm is not None:
            attn_BxTxD = self.attn_post_norm(attn_BxTxD)
        x_BxTxD = x_BxTxD + attn_BxTxD
        mlp_BxTxD = self.mlp(self.mlp_pre_norm(x_BxTxD))
        if self.mlp_post_norm is not None:
            mlp_BxTxD = self.mlp_post_norm(mlp_BxTxD)
        x_BxTxD = x_BxTxD + mlp_BxTxD
        return constrain(x_BxTxD, ("batch", "length", "act_embed"), self.cfg.sharding_rules), new_kv


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class KVCache:
    """Per-layer keys/values [B, K, S, H] (head-major) of left-padded rows.

    Row b's tokens fill slots [start_B[b], end); every row writes its next token at the same slot `end`, so
    a decode step updates one [B, 1, K, H] slice in place (a per-row write offset would be a scatter that
    rewrites the whole cache every step). A token's RoPE position is its slot minus its row's start.
    """
    keys: tuple[jax.Array, ...]
    values: tuple[jax.Array, ...]
    start_B: jax.Array      # first real slot of each row (its left padding)
    end: jax.Array          # int32 scalar: the next slot to write, shared by all rows

    @property
    def size(self) -> int:
        return self.keys[0].shape[2]


def positions_from_segments(segment_ids_BxT: jax.Array) -> jax.Array:
    """Position of each token inside its segment (packed rows restart at 0)."""
    idx_BxT = jnp.broadcast_to(jnp.arange(segment_ids_BxT.shape[1]), segment_ids_BxT.shape)
    prev_BxT = jnp.pad(segment_ids_BxT[:, :-1], ((0, 0), (1, 0)), constant_values=-1)
    start_BxT = jax.lax.cummax(jnp.where(segment_ids_BxT != prev_BxT, idx_BxT, 0), axis=1)
    return idx_BxT - start_BxT


def segment_info(segment_ids_BxT: jax.Array, positions_BxT: jax.Array | None = None) -> MaskInfo:
    """Queries and keys are the same tokens: order is the index, positions restart per segment by default."""
    if positions_BxT is None:
        positions_BxT = positions_from_segments(segment_ids_BxT)
    idx_BxT = jnp.broadcast_to(jnp.arange(segment_ids_BxT.shape[1]), segment_ids_BxT.shape)
    return MaskInfo(segment_ids_BxT, segment_ids_BxT, idx_BxT, idx_BxT, positions_BxT, positions_BxT)


class Transformer(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.embedding = _param(rngs, _normal, (cfg.vocab_size, cfg.embed_dim), ("vocab", "embed"), cfg.param_dtype)
        self.layers = nnx.List([Block(cfg, i, rngs=rngs) for i in range(cfg.num_layers)])
        self.final_norm = RMSNorm(cfg.embed_dim, cfg, rngs=rngs)
        self.lm_head = (None if cfg.tie_embeddings else
                        _param(rngs, _normal, (cfg.embed_dim, cfg.vocab_size), ("embed", "vocab"), cfg.param_dtype))

    # -------------------------------------------------------------- forward
    def __call__(self, tokens_BxT, attention_mask=None, *, segment_ids=None, positions=None) -> jax.Array:
        """Full logits [B, T, V] in float32 (parity tests, generation)."""
        return self.unembed(self.hidden_states(tokens_BxT, attention_mask, segment_ids=segment_ids,
                                               positions=positions))

    def hidden_states(self, tokens_BxT, attention_mask=None, *, segment_ids=None, positions=None) -> jax.Array:
        """Final-norm hidden states [B, T, D] in the compute dtype.

        `attention_mask` [B, T] (1 = token, 0 = padding) or `segment_ids` [B, T]
        (packed sequences 1, 2, ...; 0 = padding). Positions restart per segment.
        """
        if segment_ids is None:
            segment_ids = (jnp.ones_like(tokens_BxT) if attention_mask is None else attention_mask).astype(jnp.int32)
        return self._run(tokens_BxT, segment_info(segment_ids, positions))[0]

    def unembedding(self) -> Unembedding:
        """The unembedding as data (weight, dtype, soft-cap): callable like `unembed`."""
        tied = self.lm_head is None
        return Unembedding(self.embedding[...] if tied else self.lm_head[...], vocab_first=tied,
                           dtype=self.cfg.dtype, softcap=self.cfg.final_logit_softcap)

    def unembed(self, hidden_xD: jax.Array) -> jax.Array:
        """Logits [..., V] in float32 for hidden states [..., D] (gathered or not)."""
        return self.unembedding()(hidden_xD)

    # -------------------------------------------------------------- KV cache
    def prefill(self, tokens_BxT, attention_mask_BxT, cache_size: int,
                dtype: str | None = None) -> tuple[jax.Array, KVCache]:
        """Left-padded prompts -> every row's next-token logits [B, V] and a cache of `cache_size` slots.

        The prompts run through the ordinary forward (the configured attention kernel over the T prompt keys,
        not over the whole cache) and only the last position is unembedded: no [B, T, V] logits.
        """
        t = tokens_BxT.shape[1]
        if cache_size < t:
            raise ValueError(f"a cache of {cache_size} slots cannot hold prompts of {t} tokens")
        segment_ids_BxT = attention_mask_BxT.astype(jnp.int32)   # positions start at each row's first token
        hidden_BxTxD, kvs = self._run(tokens_BxT, segment_info(segment_ids_BxT), keep_kv=True)
        cache_dtype = jnp.dtype(dtype or self.cfg.dtype)

        def slots(x_BxTxKxH):
            x_BxKxTxH = x_BxTxKxH.swapaxes(1, 2).astype(cache_dtype)
            x_BxKxSxH = jnp.pad(x_BxKxTxH, ((0, 0), (0, 0), (0, cache_size - t), (0, 0)))
            return constrain(x_BxKxSxH, ("batch", "kv_heads", "cache_length", "head_dim"), self.cfg.sharding_rules)

        start_B = t - segment_ids_BxT.sum(axis=1)
        cache = KVCache(tuple(slots(k) for k, _ in kvs), tuple(slots(v) for _, v in kvs), start_B, jnp.int32(t))
        return self.unembed(hidden_BxTxD[:, -1]), cache

    def decode(self, tokens_BxT, cache: KVCache) -> tuple[jax.Array, KVCache]:
        """Append T tokens to every row at slots [end, end + T); logits [B, T, V] and the updated cache."""
        b, t = tokens_BxT.shape
        q_slots_BxT = jnp.broadcast_to(cache.end + jnp.arange(t), (b, t))
        k_slots_BxS = jnp.broadcast_to(jnp.arange(cache.size), (b, cache.size))
        start_Bx1 = cache.start_B[:, None]
        # Left padding is segment 0 (never visible); slots not yet written are after every query (causal).
        info = MaskInfo(jnp.ones_like(q_slots_BxT), (k_slots_BxS >= start_Bx1).astype(jnp.int32), q_slots_BxT,
                        k_slots_BxS, q_slots_BxT - start_Bx1, k_slots_BxS - start_Bx1)
        hidden_BxTxD, kvs = self._run(tokens_BxT, info, cache, cache.end)
        new_cache = KVCache(tuple(k for k, _ in kvs), tuple(v for _, v in kvs), cache.start_B, cache.end + t)
        return self.unembed(hidden_BxTxD), new_cache

    # -------------------------------------------------------------- shared body
    def _run(self, tokens_BxT, info: MaskInfo, cache=None, end=None, keep_kv: bool = False):
        cfg, q_pos_BxT = self.cfg, info.q_pos_BxT
        # The table's model dimension is gathered first (FSDP's weight all-gather): left
        # sharded over 'fsdp' it would collide with the batch's 'fsdp' sharding in the
        # lookup, which XLA resolves by replicating the whole [B, T, D] output.
        table_VxD = constrain(self.embedding[...], ("vocab", None), cfg.sharding_rules)
        x_BxTxD = jnp.take(table_VxD, tokens_BxT, axis=0).astype(jnp.dtype(cfg.dtype))
        if cfg.embed_scale:  # Gemma: the scale is rounded to the compute dtype, as in transformers
            x_BxTxD = x_BxTxD * jnp.asarray(cfg.embed_dim ** 0.5, dtype=x_BxTxD.dtype)
        x_BxTxD = constrain(x_BxTxD, ("batch", "length", "act_embed"), cfg.sharding_rules)
        tables = {False: rope_tables(cfg, q_pos_BxT, local=False)}
        if "sliding" in cfg.layer_types and cfg.local_rope_theta is not None:
            tables[True] = rope_tables(cfg, q_pos_BxT, local=True)
        kvs = []   # per layer: the updated cache, or (without one) the keys/values of these tokens
        for i, block in enumerate(self.layers):
            sin, cos = tables.get(block.sliding, tables[False])
            if cache is not None:
                x_BxTxD, kv = block(x_BxTxD, sin, cos, info, (cache.keys[i], cache.values[i]), end)
            elif cfg.remat != "none" and not keep_kv:   # training: rematerialise, keep nothing
                x_BxTxD, kv = _remat_block(block, cfg.remat)(x_BxTxD, sin, cos, info), None
            else:
                x_BxTxD, kv = block(x_BxTxD, sin, cos, info)
            kvs.append(kv)
        return self.final_norm(x_BxTxD), kvs
