"""Tiny random-init Hugging Face checkpoints, built with transformers (PyTorch CPU)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

VOCAB = 256
FAMILIES = ("llama", "qwen2", "qwen3", "gemma3")
_COMMON = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=128)


def hf_config(family: str, **overrides):
    import transformers

    if family == "llama":  # llama3 RoPE scaling with a short original context, so it bites
        kw = dict(_COMMON, rope_parameters={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                            "high_freq_factor": 4.0, "original_max_position_embeddings": 16,
                                            "rope_theta": 500000.0}, tie_word_embeddings=False)
        cls = transformers.LlamaConfig
    elif family == "qwen2":
        kw = dict(_COMMON, tie_word_embeddings=True)
        cls = transformers.Qwen2Config
    elif family == "qwen3":  # head_dim independent of hidden_size
        kw = dict(_COMMON, head_dim=16, tie_word_embeddings=False)
        cls = transformers.Qwen3Config
    elif family == "gemma3":  # sliding layers with a window shorter than the test sequences
        kw = dict(_COMMON, num_hidden_layers=3, head_dim=16, sliding_window=4, query_pre_attn_scalar=24,
                  layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                  rope_parameters={"full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 1e6},
                                   "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}})
        cls = transformers.Gemma3TextConfig
    else:
        raise ValueError(family)
    kw.update(overrides)
    return cls(**kw)


def tiny_model(family: str, seed: int = 0, **overrides):
    import torch
    import transformers

    cfg = hf_config(family, **overrides)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():  # larger than HF's 0.02 init so every term (norm offsets, biases) matters
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model


def save_tiny(family: str, path: Path, **overrides) -> Path:
    tiny_model(family, **overrides).save_pretrained(str(path))
    return path


def hf_logits(path: Path, tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor(tokens), attention_mask=torch.tensor(mask)).logits.numpy()


def padded_batch(seed: int = 0, batch: int = 4, length: int = 16):
    """Right-padded token rows of mixed lengths (one full row)."""
    rng = np.random.RandomState(seed)
    tokens = rng.randint(0, VOCAB, size=(batch, length)).astype(np.int32)
    lengths = rng.randint(3, length, size=batch)
    lengths[0] = length
    mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int32)
    return tokens, mask


def real_max_abs_diff(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    return float(np.abs(a - b)[mask.astype(bool)].max())


def config_json(path: Path) -> dict:
    return json.loads((Path(path) / "config.json").read_text())
