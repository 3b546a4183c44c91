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


# ------------------------------------------------------------------ Gemma 3 multimodal (text decoder + SigLIP)
# A tiny SigLIP tower: 28 px images in 14 px patches = 4 patches, pooled to mm_tokens_per_image = 4 image tokens.
# vision_use_head=False as in the released Gemma 3 checkpoints.
VISION = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=28,
              patch_size=14, vision_use_head=False)
# transformers' save_pretrained layout (legacy) -> the newer one other tools write (transformers 4.52 to 4.57's
# module names, the vision tower's vision_model. level included).
NEW_LAYOUT = (("language_model.model.", "model.language_model."), ("language_model.lm_head.", "lm_head."),
              ("vision_tower.", "model.vision_tower.vision_model."),
              ("multi_modal_projector.", "model.multi_modal_projector."))


def tiny_multimodal(seed: int = 0, **text_overrides):
    """A Gemma3ForConditionalGeneration with hf_config('gemma3') as its text decoder and a tiny SigLIP tower."""
    import torch
    import transformers

    cfg = transformers.Gemma3Config(text_config=hf_config("gemma3", **text_overrides).to_dict(),
                                    vision_config=transformers.SiglipVisionConfig(**VISION).to_dict(),
                                    mm_tokens_per_image=4)
    torch.manual_seed(seed)
    model = transformers.Gemma3ForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model


def to_new_layout(name: str) -> str:
    for old, new in NEW_LAYOUT:
        if name.startswith(old):
            return new + name[len(old):]
    raise ValueError(name)


def save_tiny_multimodal(path: Path, layout: str = "legacy", seed: int = 0, **text_overrides) -> Path:
    """transformers' save_pretrained (the legacy layout); `layout='new'`: the same tensors renamed."""
    from safetensors.numpy import load_file, save_file

    tiny_multimodal(seed, **text_overrides).save_pretrained(str(path))
    if layout == "new":
        file = Path(path) / "model.safetensors"
        tensors = load_file(file)
        save_file({to_new_layout(k): v for k, v in tensors.items()}, str(file), metadata={"format": "pt"})
    return path


def load_multimodal(path: Path):
    """transformers' Gemma3ForConditionalGeneration from `path`, and its loading info (missing, unexpected keys)."""
    import torch
    import transformers

    model, info = transformers.Gemma3ForConditionalGeneration.from_pretrained(
        str(path), dtype=torch.float32, output_loading_info=True)
    return model.eval(), info


def hf_multimodal_logits(path: Path, tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The text-only forward (input_ids, no pixel_values) of the multimodal model at `path`."""
    import torch

    model, _ = load_multimodal(path)
    with torch.no_grad():
        return model(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask)).logits.numpy()
