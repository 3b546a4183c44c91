"""Hugging Face checkpoints <-> monitor_jax models.

Import reads `config.json` and `*.safetensors` (one file, or sharded with
`model.safetensors.index.json`); every tensor is checked by name and shape
before any is loaded, then read one at a time and placed shard by shard on its
target devices (`jax.make_array_from_callback`), so the host never holds more
than the model plus one tensor. Export writes what
`transformers.AutoModelForCausalLM.from_pretrained` loads unchanged.

A Gemma 3 multimodal checkpoint (Gemma3ForConditionalGeneration) imports as its
text decoder; its vision tower and projector are not ours, so import notes their
names and export copies them unchanged from the source directory, in the
source's layout, beside the text weights.
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
from monitor_jax.model.config import MULTIMODAL_LAYOUTS, ModelConfig
from monitor_jax.model.create import abstract_model, variable_sharding
from monitor_jax.model.transformer import Transformer

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
# Buffers some checkpoints carry that are recomputed, not learned.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json", "added_tokens.json",
                   "generation_config.json")
# A multimodal checkpoint's image preprocessing, copied from its source on export.
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
# Where a checkpoint keeps the text decoder's tensors, by ModelConfig.multimodal_layout: the prefixes that take
# the place of a text model's "model." and "lm_head.".
TEXT_PREFIXES = {"": ("model.", "lm_head."),
                 "legacy": ("language_model.model.", "language_model.lm_head."),
                 "new": ("model.language_model.", "lm_head.")}
# A multimodal checkpoint's tensors that are not the text decoder's (vision tower, projector), by layout.
NON_TEXT_PREFIXES = {"legacy": ("vision_tower.", "multi_modal_projector."),
                     "new": ("model.vision_tower.", "model.multi_modal_projector.")}


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
    if cfg.multimodal_layout:
        names = {our: (in_layout(name, cfg.multimodal_layout), t) for our, (name, t) in names.items()}
    return names


def in_layout(name: str, layout: str) -> str:
    """A text model's tensor name (model.X, lm_head.X) where a checkpoint of `layout` keeps it."""
    model, head = TEXT_PREFIXES[layout]
    if name.startswith("lm_head."):
        return head + name[len("lm_head."):]
    return model + name[len("model."):]


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


def _multimodal_layout(files: dict[str, Path], path: Path) -> str:
    """The layout a multimodal checkpoint's tensor names are in, told by where its text decoder lives."""
    found = [layout for layout in MULTIMODAL_LAYOUTS
             if any(k.startswith(TEXT_PREFIXES[layout][0]) for k in files)]
    legacy, new = (f"{TEXT_PREFIXES[layout][0]}*" for layout in MULTIMODAL_LAYOUTS)
    if not found:
        raise CheckpointError(f"checkpoint {path} is multimodal (config.json) but has no text decoder tensors "
                              f"({legacy} or {new})")
    if len(found) > 1:
        raise CheckpointError(f"checkpoint {path} mixes two layouts of text decoder tensors ({legacy} and {new})")
    return found[0]


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
    files = _tensor_files(path)
    if cfg.multimodal_layout:  # the text decoder is ours; the rest is noted by name, for export to carry along
        layout = _multimodal_layout(files, path)
        cfg = cfg.replace(multimodal_layout=layout, multimodal_tensors=tuple(
            sorted(k for k in files if k.startswith(NON_TEXT_PREFIXES[layout]))))
    graphdef, abs_state = nnx.split(abstract_model(cfg))
    flat = dict(nnx.to_flat_state(abs_state))
    names = hf_names(cfg)

    # Check everything before loading anything.
    wanted = {hf_key: our for our, (hf_key, _) in names.items()}
    missing = [(hf_key, hf_shape(flat[our].shape, names[our][1])) for hf_key, our in wanted.items()
               if hf_key not in files]
    if missing:
        raise CheckpointError(f"checkpoint {path} is missing {len(missing)} tensor(s) that {cfg.family} "
                              f"with this config.json needs: " + _listing(f"{k} (expected shape {s})"
                                                                          for k, s in missing))
    optional = {in_layout("lm_head.weight", cfg.multimodal_layout)} if cfg.tie_embeddings else set()
    optional.update(cfg.multimodal_tensors)
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


def _header(file: Path) -> dict[str, Any]:
    """A safetensors file's header: tensor name -> dtype, shape, data_offsets (and __metadata__)."""
    with open(file, "rb") as fh:
        return json.loads(fh.read(int.from_bytes(fh.read(8), "little")))


def _carried_tensors(cfg: ModelConfig) -> dict[str, tuple[Path, int]]:
    """A multimodal model's source tensors that are not ours (vision tower, projector): name -> (file, bytes).
    Export needs every one of them: without the source there is no checkpoint of the source's architecture."""
    if not cfg.multimodal_layout:
        return {}
    if not cfg.source_path:
        raise CheckpointError("a multimodal model without a source checkpoint (source_path is empty): export copies "
                              "the vision tower and projector from the checkpoint it was imported from")
    src = Path(cfg.source_path)
    if not src.is_dir():
        raise CheckpointError(f"the multimodal source checkpoint {src} is gone: export copies its vision tower and "
                              f"projector from it")
    files = _tensor_files(src)
    missing = [k for k in cfg.multimodal_tensors if k not in files]
    if missing:
        raise CheckpointError(f"the multimodal source checkpoint {src} no longer has {len(missing)} tensor(s) that "
                              f"import found there: " + _listing(missing))
    headers = {f: _header(f) for f in {files[k] for k in cfg.multimodal_tensors}}
    out = {}
    for k in cfg.multimodal_tensors:
        begin, end = headers[files[k]][k]["data_offsets"]
        out[k] = (files[k], end - begin)
    return out


def _carried(file: Path, name: str) -> np.ndarray:
    """A source tensor exactly as stored (same dtype, same bits)."""
    with safe_open(file, framework="numpy") as st:
        try:
            return st.get_tensor(name)
        except (AttributeError, TypeError, ValueError) as e:   # a dtype numpy has no type for (float8)
            raise CheckpointError(f"tensor {name} in {file} cannot be copied: {e}") from None


def save_hf(model: Transformer, path: str | os.PathLike, *, tokenizer: Any = None, dtype: str | None = None,
            max_shard_bytes: int = 5 * 2**30) -> Path:
    """Write `model` as a Hugging Face checkpoint directory.

    `tokenizer`: a directory whose tokenizer files are copied, or an object with
    `save_pretrained`; default: the directory the model was imported from. Above `max_shard_bytes` the weights are split into
    `model-0000i-of-0000n.safetensors` files with `model.safetensors.index.json`.
    Parameters are gathered to the host one file's worth at a time. A model imported from a multimodal checkpoint
    is written as one again: the source's config.json and layout, its vision tower and projector copied unchanged.
    """
    path = Path(path)
    cfg = model.cfg
    dtype = dtype or cfg.param_dtype
    np_dtype = np.dtype(jax.numpy.dtype(dtype))
    flat = dict(nnx.to_flat_state(nnx.state(model)))
    names = hf_names(cfg)
    # Everything that can fail before anything is written.
    try:
        hf_config = cfg.to_hf(dtype)
    except ValueError as e:
        raise CheckpointError(str(e)) from None
    carried = _carried_tensors(cfg)

    # Plan the shards from shapes alone, so file names are known before writing. Our parameters come first (a
    # path tuple each), then the carried source tensors (a name each), so every process plans ours alike.
    plan: list[list[tuple | str]] = [[]]
    size = 0
    sizes = [(our, math.prod(flat[our].shape) * np_dtype.itemsize) for our in names]
    for item, nbytes in sizes + [(name, nbytes) for name, (_, nbytes) in carried.items()]:
        if plan[-1] and size + nbytes > max_shard_bytes:
            plan.append([])
            size = 0
        plan[-1].append(item)
        size += nbytes
    write = jax.process_index() == 0
    if write:
        path.mkdir(parents=True, exist_ok=True)
    fnames = ([SINGLE_FILE] if len(plan) == 1 else
              [f"model-{i + 1:05d}-of-{len(plan):05d}.safetensors" for i in range(len(plan))])
    weight_map, total = {}, 0
    for fname, items in zip(fnames, plan):
        tensors = {}
        for item in items:
            if isinstance(item, str):   # a carried source tensor: read on the writing process only
                if not write:
                    continue
                hf_key = item
                tensors[hf_key] = _carried(carried[item][0], item)
            else:
                hf_key, transform = names[item]
                tensors[hf_key] = np.ascontiguousarray(to_hf(_to_host(flat[item][...]), transform).astype(np_dtype))
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
    (path / "config.json").write_text(json.dumps(hf_config, indent=2, sort_keys=True))
    for name in PROCESSOR_FILES if cfg.multimodal_layout else ():
        if (Path(cfg.source_path) / name).exists():
            shutil.copy(Path(cfg.source_path) / name, path / name)
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
