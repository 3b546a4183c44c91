"""ModelConfig: one dataclass describes every supported decoder family.

`from_hf` reads a Hugging Face `config.json` dict (both the transformers v4
layout, `rope_theta` + `rope_scaling`, and the v5 layout, `rope_parameters`);
`to_hf` writes one that `transformers.AutoConfig` reads back. A Gemma 3
multimodal config.json (Gemma3ForConditionalGeneration) gives its text decoder;
the vision tower is not part of the model (model/hf.py carries it through export).
"""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from monitor_jax.model.attention import KERNELS
from monitor_jax.parallel.sharding import DEFAULT_RULES, Rules
from monitor_jax.settings import setting

# architectures value in config.json -> family
ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "Gemma3ForCausalLM": "gemma3",
}
MODEL_TYPES = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "gemma3": "gemma3_text"}
# Text decoder + vision tower checkpoints (text tower imported, the rest carried through export):
# architectures value -> model_type. The text decoder is the gemma3 family.
MULTIMODAL_ARCHITECTURES = {"Gemma3ForConditionalGeneration": "gemma3"}
# On-disk names of a multimodal checkpoint's tensors: "legacy" is language_model.model.* (transformers <= 4.51,
# and what every transformers save_pretrained writes), "new" is model.language_model.* (other tools).
MULTIMODAL_LAYOUTS = ("legacy", "new")
# transformers' Gemma3TextConfig defaults (models/gemma3/configuration_gemma3.py, v4.50 to v5; the v4 names:
# rope_theta, rope_local_base_freq and sliding_window_pattern are v5's default_theta and _sliding_window_pattern).
# A multimodal config.json's text_config leaves out every field equal to these. Written out here, not read from
# transformers, so that importing needs neither transformers nor torch; tests/test_gemma3_multimodal.py checks
# them against the installed Gemma3TextConfig.
GEMMA3_TEXT_DEFAULTS: dict[str, Any] = dict(
    vocab_size=262_208, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26, num_attention_heads=8,
    num_key_value_heads=4, head_dim=256, hidden_activation="gelu_pytorch_tanh", max_position_embeddings=131_072,
    rms_norm_eps=1e-6, tie_word_embeddings=True, attention_bias=False, query_pre_attn_scalar=256,
    sliding_window=4096, final_logit_softcapping=None, attn_logit_softcapping=None, rope_theta=1_000_000.0,
    rope_local_base_freq=10_000.0, sliding_window_pattern=6, use_bidirectional_attention=False,
)
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")
DTYPES = ("float32", "bfloat16", "float16")              # parameter and compute dtypes


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """The `model` config section: where the model comes from, and what applies to any model."""
    hf_path: str = setting("", "a Hugging Face checkpoint directory to start from, a .gguf file, or package:NAME "
                           "(the GGUF a pip package ships; converted once, cached)")
    config: dict = setting({}, "ModelConfig fields of a random-init model when hf_path is empty (vocab from the "
                           "tokenizer)", check=False)
    tokenizer: str = setting("", "tokenizer directory ('' = hf_path's; 'demo' = build the demo tokenizer)")
    adapter: str = setting("", "a PEFT LoRA adapter directory loaded onto the base (eval, score, generate, or further "
                           "training of its adapters); its rank, alpha and modules replace lora.*")
    param_dtype: str = setting("float32", "parameter dtype", choices=DTYPES)
    dtype: str = setting("float32", "compute dtype", choices=DTYPES)
    remat: str = setting("none", "activation rematerialisation in the backward pass", choices=REMAT_POLICIES)
    attention: str = setting("flash", "flash: keys in blocks of attention_block, memory linear in length; dense: "
                             "[B, N, T, S] scores", choices=tuple(KERNELS))
    attention_block: int = setting(256, "flash attention's queries and keys per block (256 beat 512 at every "
                                   "length on CPU, docs/benchmarks.md)", low=1)

    def overrides(self) -> dict[str, Any]:
        """The ModelConfig fields that apply to any model, random-init or imported (dtypes, remat, attention)."""
        return dict(param_dtype=self.param_dtype, dtype=self.dtype, remat=self.remat, attention=self.attention,
                    attention_block=self.attention_block)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    family: str                      # llama | qwen2 | qwen3 | gemma3
    vocab_size: int
    embed_dim: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    mlp_dim: int
    norm_eps: float = 1e-6
    # RoPE. rope_type: default | llama3 | linear (applies to global layers).
    rope_theta: float = 10_000.0
    rope_type: str = "default"
    rope_factor: float = 1.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_positions: int = 8192
    local_rope_theta: float | None = None   # Gemma 3 sliding layers (plain RoPE)
    # Attention.
    sliding_window: int | None = None
    layer_types: tuple[str, ...] = ()       # 'full' | 'sliding' per layer; () = all full
    qkv_bias: bool = False                  # Qwen2.5
    qk_norm: bool = False                   # Qwen3, Gemma 3
    query_scale: float | None = None        # None = head_dim ** -0.5
    attn_logit_softcap: float | None = None
    # Gemma-isms.
    norm_offset: float = 0.0                # RMSNorm scale is (offset + w): Gemma uses 1
    sandwich_norm: bool = False             # extra norms after attention and MLP
    embed_scale: bool = False               # multiply embeddings by sqrt(embed_dim)
    activation: str = "silu"                # silu | gelu_tanh
    final_logit_softcap: float | None = None
    tie_embeddings: bool = False
    max_positions: int = 8192
    # Numerics and memory.
    param_dtype: str = "float32"
    dtype: str = "float32"                  # compute dtype
    remat: str = "none"                     # none | full | dots | dots_no_batch
    # flash: keys in blocks, memory linear in length; at most one block it is the dense computation.
    attention: str = "flash"                # flash | dense (materialises [B, N, T, S] scores)
    # 256: on CPU faster than 512 at every length measured, and packed rows waste less on partly visible
    # block pairs (docs/benchmarks.md, issue 15); not yet measured on an accelerator.
    attention_block: int = 256              # flash: queries and keys per block
    sharding_rules: Rules = DEFAULT_RULES
    # The config.json this came from (JSON text), kept so export can write back
    # the fields monitor_jax does not model (token ids, generation defaults).
    source_hf_config: str = ""
    source_path: str = ""                   # the checkpoint directory it was imported from
    # A multimodal source (Gemma3ForConditionalGeneration): its tensor layout ("legacy" | "new"; "" = a text
    # model), and the names of its tensors that are not ours (vision tower, projector), which export copies from
    # source_path unchanged.
    multimodal_layout: str = ""
    multimodal_tensors: tuple[str, ...] = dataclasses.field(default=(), repr=False)

    def __post_init__(self):
        for name in ("vocab_size", "embed_dim", "num_layers", "num_heads", "num_kv_heads", "head_dim", "mlp_dim",
                     "max_positions"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        for name in ("norm_eps", "rope_theta"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)!r} must be positive")
        if self.family not in MODEL_TYPES:
            raise ValueError(f"family {self.family!r} is not supported; supported: {sorted(MODEL_TYPES)}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")
        if self.attention not in KERNELS:
            raise ValueError(f"attention={self.attention!r}; choose {' or '.join(KERNELS)}")
        if self.attention_block <= 0:
            raise ValueError(f"attention_block={self.attention_block} must be positive")
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"remat={self.remat!r}; choose one of {REMAT_POLICIES}")
        if self.activation not in ("silu", "gelu_tanh"):
            raise ValueError(f"activation={self.activation!r}; choose silu or gelu_tanh")
        if self.layer_types and len(self.layer_types) != self.num_layers:
            raise ValueError(f"layer_types has {len(self.layer_types)} entries for {self.num_layers} layers")
        if "sliding" in self.layer_types and not self.sliding_window:
            raise ValueError("layer_types has sliding layers but sliding_window is not set")
        if self.multimodal_layout not in ("", *MULTIMODAL_LAYOUTS):
            raise ValueError(f"multimodal_layout={self.multimodal_layout!r}; choose one of {MULTIMODAL_LAYOUTS}")
        if self.multimodal_layout and self.family != "gemma3":
            raise ValueError(f"multimodal_layout={self.multimodal_layout!r} is for gemma3, not {self.family}")

    def layer_type(self, i: int) -> str:
        return self.layer_types[i] if self.layer_types else "full"

    @property
    def scale(self) -> float:
        return self.query_scale if self.query_scale is not None else self.head_dim ** -0.5

    def replace(self, **kw) -> "ModelConfig":
        return dataclasses.replace(self, **kw)

    def num_params(self) -> int:
        d, h = self.embed_dim, self.head_dim
        attn = d * h * (2 * self.num_heads + 2 * self.num_kv_heads)
        layer = attn + 3 * d * self.mlp_dim
        emb = self.vocab_size * d * (1 if self.tie_embeddings else 2)
        return self.num_layers * layer + emb

    # ------------------------------------------------------------------ HF I/O
    @classmethod
    def from_hf(cls, hf: dict[str, Any], **overrides) -> "ModelConfig":
        """ModelConfig from a config.json dict; `overrides` set dtype, remat, rules.

        A multimodal config.json gives its text decoder, layout "legacy" until load_hf has seen the tensor names."""
        if _multimodal(hf):
            return cls._from_multimodal_hf(hf, **overrides)
        archs = hf.get("architectures") or []
        family = next((ARCHITECTURES[a] for a in archs if a in ARCHITECTURES), None)
        if family is None and not archs:
            # Some converters write no `architectures`; transformers then goes by `model_type`, and so do we.
            family = {t: f for f, t in MODEL_TYPES.items()}.get(hf.get("model_type"))
            if family is None:
                raise ValueError(f"config.json has no architectures and model_type={hf.get('model_type')!r} is "
                                 f"not supported; supported: {sorted(MODEL_TYPES.values())}")
        if family is None:
            raise ValueError(f"config.json architectures={archs} is not supported; supported: "
                             f"{sorted(ARCHITECTURES)} (and, text tower only, {sorted(MULTIMODAL_ARCHITECTURES)})")
        n_layers = hf["num_hidden_layers"]
        n_heads = hf["num_attention_heads"]
        head_dim = hf.get("head_dim") or hf["hidden_size"] // n_heads
        kw: dict[str, Any] = dict(
            family=family, vocab_size=hf["vocab_size"], embed_dim=hf["hidden_size"],
            num_layers=n_layers, num_heads=n_heads,
            num_kv_heads=hf.get("num_key_value_heads") or n_heads, head_dim=head_dim,
            mlp_dim=hf["intermediate_size"], norm_eps=hf.get("rms_norm_eps", 1e-6),
            tie_embeddings=bool(hf.get("tie_word_embeddings", family == "gemma3")),
            max_positions=hf.get("max_position_embeddings", 8192),
            source_hf_config=json.dumps(hf, sort_keys=True),
        )
        act = hf.get("hidden_activation") or hf.get("hidden_act") or "silu"
        kw["activation"] = {"silu": "silu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_tanh": "gelu_tanh"}.get(act)
        if kw["activation"] is None:
            raise ValueError(f"config.json activation {act!r} is not supported (silu, gelu_pytorch_tanh)")
        if hf.get("attention_bias") and family == "llama":
            raise ValueError("config.json attention_bias=true is not supported for llama")
        if hf.get("mlp_bias"):
            raise ValueError("config.json mlp_bias=true is not supported")

        global_rope, local_rope = _rope_params(hf, family)
        kw.update(_rope_fields(global_rope))
        if family == "gemma3":
            kw["local_rope_theta"] = float(local_rope.get("rope_theta", 10_000.0))
            if local_rope.get("rope_type", "default") != "default":
                raise ValueError(f"Gemma 3 local rope_type {local_rope['rope_type']!r} is not supported")

        layer_types = hf.get("layer_types")
        if layer_types is None and family == "gemma3":
            pattern = hf.get("sliding_window_pattern") or hf.get("_sliding_window_pattern") or 6
            layer_types = ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention"
                           for i in range(n_layers)]
        window = hf.get("sliding_window")
        if family in ("qwen2", "qwen3") and not hf.get("use_sliding_window", False):
            layer_types = None  # Qwen ships sliding_window values that are switched off
        if layer_types:
            kw["layer_types"] = tuple("sliding" if t == "sliding_attention" else "full" for t in layer_types)
            if "sliding" in kw["layer_types"]:
                kw["sliding_window"] = int(window)
        if family == "qwen2":
            kw["qkv_bias"] = True
        if family in ("qwen3", "gemma3"):
            kw["qk_norm"] = True
        if family == "gemma3":
            kw.update(norm_offset=1.0, sandwich_norm=True, embed_scale=True,
                      query_scale=float(hf.get("query_pre_attn_scalar", head_dim)) ** -0.5,
                      attn_logit_softcap=hf.get("attn_logit_softcapping"),
                      final_logit_softcap=hf.get("final_logit_softcapping"))
        kw.update(overrides)
        return cls(**kw)

    @classmethod
    def _from_multimodal_hf(cls, hf: dict[str, Any], **overrides) -> "ModelConfig":
        """The text decoder of a Gemma3ForConditionalGeneration config.json; source_hf_config keeps all of it."""
        text = dict(hf.get("text_config") or {})
        if text.get("model_type", "gemma3_text") != "gemma3_text":
            raise ValueError(f"config.json text_config model_type={text['model_type']!r}; Gemma 3 multimodal "
                             f"checkpoints have gemma3_text")
        # Gemma3Config's own tie_word_embeddings stands in for a text_config that leaves it out.
        text.setdefault("tie_word_embeddings", hf.get("tie_word_embeddings", True))
        defaults = dict(GEMMA3_TEXT_DEFAULTS)
        if "_sliding_window_pattern" in text:   # v5's spelling of the pattern; ours would shadow it
            del defaults["sliding_window_pattern"]
        text = defaults | text
        if text.get("use_bidirectional_attention"):
            raise ValueError("config.json text_config use_bidirectional_attention=true is not supported")
        # transformers' Gemma3ForConditionalGeneration never applies final_logit_softcapping (only
        # Gemma3ForCausalLM does); every released Gemma 3 leaves it null anyway.
        text["final_logit_softcapping"] = None
        text["architectures"] = ["Gemma3ForCausalLM"]
        overrides.setdefault("multimodal_layout", "legacy")
        return cls.from_hf(text, source_hf_config=json.dumps(hf, sort_keys=True), **overrides)

    def to_hf(self, dtype: str | None = None) -> dict[str, Any]:
        """A config.json dict (transformers v4 layout, which v5 also reads); a multimodal model's is its source's."""
        hf: dict[str, Any] = json.loads(self.source_hf_config) if self.source_hf_config else {}
        if self.multimodal_layout:
            return self._multimodal_hf(hf, dtype or self.param_dtype)
        arch = {v: k for k, v in ARCHITECTURES.items()}[self.family]
        if hf and not _multimodal(hf) and ModelConfig.from_hf(hf).structure() == self.structure():
            out = dict(hf)   # unchanged architecture: keep the source's exact layout
        else:                # (a multimodal source's text decoder exported alone lands here too)
            ids = (hf.get("text_config") or {}) | hf
            out = {k: v for k, v in ids.items() if k in ("bos_token_id", "eos_token_id", "pad_token_id")}
            out.update(self._hf_fields())
        out["architectures"] = [arch]
        out["model_type"] = MODEL_TYPES[self.family]
        out["dtype"] = dtype or self.param_dtype
        out.pop("torch_dtype", None)
        return out

    def _multimodal_hf(self, hf: dict[str, Any], dtype: str) -> dict[str, Any]:
        """The source's config.json with the dtype of the text weights: the vision tower and the projector are
        the source's, so the text decoder they feed must be the one the source describes."""
        if not hf or not _multimodal(hf) or ModelConfig.from_hf(hf).structure() != self.structure():
            raise ValueError("a multimodal model's text decoder no longer matches its source config.json "
                             f"({self.source_path or 'no source'}): its vision tower cannot be exported with it")
        out = dict(hf)
        out["dtype"] = dtype
        out.pop("torch_dtype", None)
        if isinstance(out.get("text_config"), dict) and {"dtype", "torch_dtype"} & set(out["text_config"]):
            out["text_config"] = {k: v for k, v in out["text_config"].items() if k != "torch_dtype"} | {"dtype": dtype}
        return out

    def structure(self) -> tuple:
        """The fields that decide the computation (not dtypes, remat, attention kernel, sharding)."""
        skip = {"param_dtype", "dtype", "remat", "attention", "attention_block", "sharding_rules", "source_hf_config",
                "source_path", "max_positions", "multimodal_layout", "multimodal_tensors"}
        return tuple((f.name, getattr(self, f.name)) for f in dataclasses.fields(self) if f.name not in skip)

    def _hf_fields(self) -> dict[str, Any]:
        hf: dict[str, Any] = dict(
            vocab_size=self.vocab_size, hidden_size=self.embed_dim, intermediate_size=self.mlp_dim,
            num_hidden_layers=self.num_layers, num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_kv_heads, head_dim=self.head_dim, rms_norm_eps=self.norm_eps,
            tie_word_embeddings=self.tie_embeddings, max_position_embeddings=self.max_positions,
            rope_theta=self.rope_theta, attention_bias=self.qkv_bias,
        )
        if self.rope_type == "llama3":
            hf["rope_scaling"] = dict(rope_type="llama3", factor=self.rope_factor,
                                      low_freq_factor=self.rope_low_freq_factor,
                                      high_freq_factor=self.rope_high_freq_factor,
                                      original_max_position_embeddings=self.rope_original_max_positions)
        elif self.rope_type == "linear":
            hf["rope_scaling"] = dict(rope_type="linear", factor=self.rope_factor)
        if self.family == "gemma3":
            hf.update(hidden_activation="gelu_pytorch_tanh", rope_local_base_freq=self.local_rope_theta,
                      query_pre_attn_scalar=round(self.scale ** -2),
                      attn_logit_softcapping=self.attn_logit_softcap,
                      final_logit_softcapping=self.final_logit_softcap)
        else:
            hf["hidden_act"] = "silu"
        if self.layer_types:
            hf["layer_types"] = [f"{t}_attention" if t == "sliding" else "full_attention"
                                 for t in self.layer_types]
            hf["sliding_window"] = self.sliding_window
            if self.family in ("qwen2", "qwen3"):
                hf["use_sliding_window"] = "sliding" in self.layer_types
        return hf


def _multimodal(hf: dict[str, Any]) -> bool:
    """A text decoder + vision tower config.json (by architectures, else by model_type as transformers does)."""
    archs = hf.get("architectures") or []
    if archs:
        return any(a in MULTIMODAL_ARCHITECTURES for a in archs)
    return hf.get("model_type") in MULTIMODAL_ARCHITECTURES.values()


def _rope_params(hf: dict, family: str) -> tuple[dict, dict]:
    """(global, local) rope parameter dicts from either config layout."""
    rp = hf.get("rope_parameters")
    if rp is not None:  # transformers v5
        if "full_attention" in rp:
            return rp["full_attention"], rp.get("sliding_attention", {"rope_theta": 10_000.0})
        return rp, {}
    scaling = dict(hf.get("rope_scaling") or {})
    scaling["rope_theta"] = hf.get("rope_theta", 10_000.0)
    local = {"rope_theta": hf.get("rope_local_base_freq", 10_000.0)} if family == "gemma3" else {}
    return scaling, local


def _rope_fields(rope: dict) -> dict[str, Any]:
    rope_type = rope.get("rope_type") or rope.get("type") or "default"
    out: dict[str, Any] = {"rope_theta": float(rope.get("rope_theta", 10_000.0)), "rope_type": rope_type}
    if rope_type == "llama3":
        out.update(rope_factor=float(rope["factor"]), rope_low_freq_factor=float(rope["low_freq_factor"]),
                   rope_high_freq_factor=float(rope["high_freq_factor"]),
                   rope_original_max_positions=int(rope["original_max_position_embeddings"]))
    elif rope_type == "linear":
        out["rope_factor"] = float(rope["factor"])
    elif rope_type != "default":
        raise ValueError(f"rope_type {rope_type!r} is not supported (default, llama3, linear)")
    return out


def rope_inv_freq(cfg: ModelConfig, local: bool = False):
    """Inverse frequencies [head_dim // 2] as float32 numpy, as transformers computes them."""
    import numpy as np

    theta = cfg.local_rope_theta if local else cfg.rope_theta
    inv = 1.0 / (theta ** (np.arange(0, cfg.head_dim, 2, dtype=np.int64).astype(np.float32) / cfg.head_dim))
    inv = inv.astype(np.float32)
    if local or cfg.rope_type == "default":
        return inv
    if cfg.rope_type == "linear":
        return (inv / cfg.rope_factor).astype(np.float32)
    # llama3: leave high frequencies, divide low ones by `factor`, interpolate between.
    old = cfg.rope_original_max_positions
    low_wavelen = old / cfg.rope_low_freq_factor
    high_wavelen = old / cfg.rope_high_freq_factor
    wavelen = 2 * math.pi / inv
    scaled = np.where(wavelen > low_wavelen, inv / cfg.rope_factor, inv)
    smooth = (old / wavelen - cfg.rope_low_freq_factor) / (cfg.rope_high_freq_factor - cfg.rope_low_freq_factor)
    smoothed = (1 - smooth) * scaled / cfg.rope_factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return np.where(medium, smoothed, scaled).astype(np.float32)
