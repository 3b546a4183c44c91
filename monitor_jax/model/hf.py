"""Hugging Face checkpoints <-> monitor_jax models.

Import reads `config.json` and `*.safetensors` (one file, or sharded with
`model.safetensors.index.json`); every tensor is checked by name and shape
before any is loaded, then read one at a time and placed shard by shard on its
target devices (`jax.make_array_from_callback`), so the host never holds more
than the model plus one tensor. Export writes what
`transformers.AutoModelForCausalLM.from_pretrained` loads unchanged.
"""
from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh
from safetensors import safe_open
from safetensors.numpy import save_file

from monitor_jax.errors import CheckpointError  # noqa: F401  (re-exported for callers)
from monitor_jax.model.config import ModelConfig
from monitor_jax.model.create import abstract_model, variable_sharding
from monitor_jax.model.transformer import Transformer

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
# Buffers some checkpoints carry that are recomputed, not learned.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json", "added_tokens.json",
                   "generation_config.json")


# A transform is "copy", "flat" (HF keeps the heads dims flattened) or an int
# n: HF stores a torch Linear weight [out, in]; ours is [in..., out...] with the
# first n dims being the input dims.
def hf_names(cfg: ModelConfig) -> dict[tuple, tuple[str, Any]]:
    """Our parameter path -> (HF tensor name, transform). The whole mapping, declaratively."""
    names: dict[tuple, tuple[str, Any]] = {("embedding",): ("model.embed_tokens.weight", "copy"),
                                           ("final_norm", "scale"): ("model.norm.weight", "copy")}
    if not cfg.tie_embeddings:
        names[("lm_head",)] = ("lm_head.weight", 1)
    gemma = cfg.family == "gemma3"
    for i in range(cfg.num_layers):
        p, hf = ("layers", i), f"model.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj"):
            names[p + ("attn", proj, "kernel")] = (hf + f"self_attn.{proj}.weight", 1)
            if cfg.qkv_bias:
                names[p + ("attn", proj, "bias")] = (hf + f"self_attn.{proj}.bias", "flat")
        names[p + ("attn", "o_proj", "kernel")] = (hf + "self_attn.o_proj.weight", 2)
        if cfg.qk_norm:
            names[p + ("attn", "q_norm", "scale")] = (hf + "self_attn.q_norm.weight", "copy")
            names[p + ("attn", "k_norm", "scale")] = (hf + "self_attn.k_norm.weight", "copy")
        for proj in ("gate_proj", "up_proj", "down_proj"):
            names[p + ("mlp", proj, "kernel")] = (hf + f"mlp.{proj}.weight", 1)
        names[p + ("attn_pre_norm", "scale")] = (hf + "input_layernorm.weight", "copy")
        if gemma:  # Gemma's "post_attention_layernorm" normalises the attention output
            names[p + ("attn_post_norm", "scale")] = (hf + "post_attention_layernorm.weight", "copy")
            names[p + ("mlp_pre_norm", "scale")] = (hf + "pre_feedforward_layernorm.weight", "copy")
            names[p + ("mlp_post_norm", "scale")] = (hf + "post_feedforward_layernorm.weight", "copy")
        else:      # Llama/Qwen's "post_attention_layernorm" is the norm before the MLP
            names[p + ("mlp_pre_norm", "scale")] = (hf + "post_attention_layernorm.weight", "copy")
    return names


def hf_shape(shape: tuple[int, ...], transform) -> tuple[int, ...]:
    if transform == "copy":
        return tuple(shape)
    if transform == "flat":
        return (math.prod(shape),)
    return (math.prod(shape[transform:]), math.prod(shape[:transform]))


def to_ours(hf_array: np.ndarray, shape: tuple[int, ...], transform) -> np.ndarray:
    """A view where possible (transpose, then split dims), never a full copy."""
    if transform == "copy":
        return hf_array
    if transform == "flat":
        return hf_array.reshape(shape)
    return hf_array.T.reshape(shape)


def to_hf(array: np.ndarray, transform) -> np.ndarray:
    if transform == "copy":
        return array
    if transform == "flat":
        return array.reshape(-1)
    n = transform
    return array.reshape(math.prod(array.shape[:n]), math.prod(array.shape[n:])).T


# ------------------------------------------------------------------ import
def _listing(items, limit: int = 8) -> str:
    """One line: the first `limit` items, then how many more."""
    items = list(items)
    more = f"; and {len(items) - limit} more" if len(items) > limit else ""
    return "; ".join(items[:limit]) + more


def _tensor_files(path: Path) -> dict[str, Path]:
    """HF tensor name -> file holding it."""
    index = path / INDEX_FILE
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        missing_files = sorted({f for f in weight_map.values() if not (path / f).exists()})
        if missing_files:
            raise CheckpointError(f"{index} names files that do not exist: {missing_files}")
        return {k: path / f for k, f in weight_map.items()}
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"no *.safetensors files in {path} (and no {INDEX_FILE})")
    out: dict[str, Path] = {}
    for f in files:
        with safe_open(f, framework="numpy") as st:
            for k in st.keys():
                out[k] = f
    return out


def load_hf(path: str | os.PathLike, mesh: Mesh | None = None, param_dtype: str = "float32",
            dtype: str | None = None, **overrides) -> tuple[Transformer, ModelConfig]:
    """Import a Hugging Face checkpoint directory; parameters land on `mesh` (None: one device).

    `dtype` is the compute dtype (default: `param_dtype`); `overrides` set other
    ModelConfig fields (remat, sharding_rules).
    """
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.exists():
        raise CheckpointError(f"{config_file} does not exist: a Hugging Face checkpoint directory has config.json")
    try:
        cfg = ModelConfig.from_hf(json.loads(config_file.read_text()), param_dtype=param_dtype,
                                  dtype=dtype or param_dtype, source_path=str(path.resolve()), **overrides)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{config_file} line {e.lineno}: invalid JSON ({e.msg})") from None
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{config_file}: {e}") from None
    graphdef, abs_state = nnx.split(abstract_model(cfg))
    flat = dict(nnx.to_flat_state(abs_state))
    names = hf_names(cfg)
    files = _tensor_files(path)

    # Check everything before loading anything.
    wanted = {hf_key: our for our, (hf_key, _) in names.items()}
    missing = [(hf_key, hf_shape(flat[our].shape, names[our][1])) for hf_key, our in wanted.items()
               if hf_key not in files]
    if missing:
        raise CheckpointError(f"checkpoint {path} is missing {len(missing)} tensor(s) that {cfg.family} "
                              f"with this config.json needs: " + _listing(f"{k} (expected shape {s})"
                                                                          for k, s in missing))
    optional = {"lm_head.weight"} if cfg.tie_embeddings else set()
    unexpected = sorted(k for k in files if k not in wanted and k not in optional
                        and not k.endswith(_IGNORED_SUFFIXES))
    by_file: dict[Path, list[str]] = {}
    for hf_key in wanted:
        by_file.setdefault(files[hf_key], []).append(hf_key)
    if unexpected:
        shapes = {}
        for k in unexpected:
            with safe_open(files[k], framework="numpy") as st:
                shapes[k] = tuple(st.get_slice(k).get_shape())
        raise CheckpointError(f"checkpoint {path} has {len(unexpected)} tensor(s) that {cfg.family} with this "
                              f"config.json does not use: " + _listing(f"{k} (shape {shapes[k]})"
                                                                       for k in unexpected))
    for f, keys in by_file.items():
        with safe_open(f, framework="numpy") as st:
            for hf_key in keys:
                our = wanted[hf_key]
                expected, got = hf_shape(flat[our].shape, names[our][1]), tuple(st.get_slice(hf_key).get_shape())
                if expected != got:
                    raise CheckpointError(f"tensor {hf_key} in {f.name} has shape {got}, but config.json implies "
                                          f"{expected} (parameter {'.'.join(map(str, our))} {flat[our].shape})")

    np_dtype = np.dtype(jax.numpy.dtype(param_dtype))
    for f, keys in by_file.items():
        for hf_key in keys:
            # One open per tensor: safetensors memory-maps the file, and pages
            # touched through an open map count as resident until it is closed.
            with safe_open(f, framework="numpy") as st:
                tensor = st.get_tensor(hf_key)
            our = wanted[hf_key]
            var = flat[our]
            host = to_ours(tensor, var.shape, names[our][1])
            sharding = variable_sharding(var, mesh, cfg.sharding_rules)
            var.set_value(jax.make_array_from_callback(
                var.shape, sharding, lambda idx, h=host: np.asarray(h[idx], dtype=np_dtype)))
            del host, tensor
    state = nnx.from_flat_state(flat)
    return nnx.merge(graphdef, state), cfg


# ------------------------------------------------------------------ export
def _to_host(x: jax.Array) -> np.ndarray:
    if not x.is_fully_addressable:  # multi-host: every process gets the whole tensor
        from jax.experimental import multihost_utils
        x = multihost_utils.process_allgather(x, tiled=True)
    return np.asarray(x)


def save_hf(model: Transformer, path: str | os.PathLike, *, tokenizer: Any = None, dtype: str | None = None,
            max_shard_bytes: int = 5 * 2**30) -> Path:
    """Write `model` as a Hugging Face checkpoint directory.

    `tokenizer`: a directory whose tokenizer files are copied, or an object with
    `save_pretrained`; default: the directory the model was imported from. Above `max_shard_bytes` the weights are split into
    `model-0000i-of-0000n.safetensors` files with `model.safetensors.index.json`.
    Parameters are gathered to the host one file's worth at a time.
    """
    path = Path(path)
    cfg = model.cfg
    dtype = dtype or cfg.param_dtype
    np_dtype = np.dtype(jax.numpy.dtype(dtype))
    flat = dict(nnx.to_flat_state(nnx.state(model)))
    names = hf_names(cfg)

    # Plan the shards from shapes alone, so file names are known before writing.
    plan: list[list[tuple]] = [[]]
    size = 0
    for our in names:
        nbytes = math.prod(flat[our].shape) * np_dtype.itemsize
        if plan[-1] and size + nbytes > max_shard_bytes:
            plan.append([])
            size = 0
        plan[-1].append(our)
        size += nbytes
    write = jax.process_index() == 0
    if write:
        path.mkdir(parents=True, exist_ok=True)
    fnames = ([SINGLE_FILE] if len(plan) == 1 else
              [f"model-{i + 1:05d}-of-{len(plan):05d}.safetensors" for i in range(len(plan))])
    weight_map, total = {}, 0
    for fname, ours in zip(fnames, plan):
        tensors = {}
        for our in ours:
            hf_key, transform = names[our]
            tensors[hf_key] = np.ascontiguousarray(to_hf(_to_host(flat[our][...]), transform).astype(np_dtype))
            weight_map[hf_key] = fname
            total += tensors[hf_key].nbytes
        if write:
            save_file(tensors, str(path / fname), metadata={"format": "pt"})
        del tensors
    if not write:
        return path
    if len(plan) > 1:
        (path / INDEX_FILE).write_text(json.dumps({"metadata": {"total_size": total},
                                                   "weight_map": weight_map}, indent=2))
    (path / "config.json").write_text(json.dumps(cfg.to_hf(dtype), indent=2, sort_keys=True))
    if tokenizer is None and cfg.source_path:
        tokenizer = cfg.source_path
    if isinstance(tokenizer, (str, os.PathLike)):
        for name in TOKENIZER_FILES:
            src = Path(tokenizer) / name
            if src.exists():
                shutil.copy(src, path / name)
    elif tokenizer is not None:
        tokenizer.save_pretrained(str(path))
    return path
