"""Analytic FLOPs of the model's programs (a multiply-add is 2 FLOPs), to check the compiled count against and to
turn a step into time (MFU = these FLOPs / (step time x peak), as MaxText accounts it).

Counted: the projections (q, k, v, o, MLP) on every position, attention scores and values over all key positions
(as the dense kernel computes them; the flash kernel skips blocks wholly above the causal diagonal, so it
computes up to about half of that at long lengths), and the unembedding only where it is computed: at the label
position of a classification example, and on every position of the rows the instruction loss covers. The
backward pass is twice the forward for what is differentiated; a frozen weight (a LoRA base) costs its
input-gradient only. Normalisations, activations, RoPE and the softmax are left out (well under 1%).
"""
from __future__ import annotations

import dataclasses

from monitor_jax.model.config import ModelConfig


@dataclasses.dataclass(frozen=True)
class Flops:
    """One program's FLOPs by part (global, all devices together)."""
    projections: float
    attention: float
    unembedding: float
    adapters: float = 0.0

    @property
    def total(self) -> float:
        return self.projections + self.attention + self.unembedding + self.adapters


def projection_params(cfg: ModelConfig) -> int:
    """Weights every position multiplies through, over all layers (embedding and unembedding excluded)."""
    d, q, kv = cfg.embed_dim, cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    return cfg.num_layers * (d * q + 2 * d * kv + q * d + 3 * d * cfg.mlp_dim)


def attention_flops(cfg: ModelConfig, rows: int, length: int) -> float:
    """Forward QK^T and AV over all [length, length] pairs of every head and layer."""
    return 4.0 * cfg.num_layers * rows * length * length * cfg.num_heads * cfg.head_dim


def adapter_params(cfg: ModelConfig, rank: int, targets: tuple[str, ...]) -> int:
    """LoRA A and B weights per layer stack for the adapted projections (names as lora.targets)."""
    d, q, kv, f = cfg.embed_dim, cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim, cfg.mlp_dim
    dims = dict(q_proj=(d, q), k_proj=(d, kv), v_proj=(d, kv), o_proj=(q, d), gate_proj=(d, f), up_proj=(d, f),
                down_proj=(f, d))
    return cfg.num_layers * sum(rank * (i + o) for name, (i, o) in dims.items() if name in targets)


def train_flops(cfg: ModelConfig, rows: int, length: int, label_positions: int, instruction_positions: int,
                lora_rank: int = 0, lora_targets: tuple[str, ...] = ()) -> Flops:
    """One train step over `rows` x `length` positions: `label_positions` classification labels unembedded, and
    `instruction_positions` positions under the instruction loss. Full fine-tuning: 6 FLOPs per weight and
    position. LoRA: the frozen weights 4 (forward, input-gradient), the adapters 6 per weight."""
    tokens = rows * length
    per_weight = 4.0 if lora_rank else 6.0
    unembed = 2.0 * cfg.embed_dim * cfg.vocab_size * (label_positions + instruction_positions)
    # The unembedding's weight gradient is needed when it is trained (full) or tied to the trained embedding.
    unembed *= 2.0 if lora_rank else 3.0
    return Flops(projections=per_weight * projection_params(cfg) * tokens,
                 attention=3.0 * attention_flops(cfg, rows, length),
                 unembedding=unembed,
                 adapters=6.0 * adapter_params(cfg, lora_rank, lora_targets) * tokens if lora_rank else 0.0)


def score_flops(cfg: ModelConfig, rows: int, length: int, lora_rank: int = 0,
                lora_targets: tuple[str, ...] = ()) -> Flops:
    """One scoring batch: the forward pass, and the unembedding at one answer position a row."""
    tokens = rows * length
    return Flops(projections=2.0 * projection_params(cfg) * tokens, attention=attention_flops(cfg, rows, length),
                 unembedding=2.0 * cfg.embed_dim * cfg.vocab_size * rows,
                 adapters=2.0 * adapter_params(cfg, lora_rank, lora_targets) * tokens if lora_rank else 0.0)
