"""LoRA adapters on the decoder's projections: add, merge, and the PEFT file layout in and out.

An adapted projection computes `einsum(spec, x, W) + scale · (x A) B` with A [in dims..., R] and B [R, out
dims...] (`Adapter`, a child of the `Einsum` module it adapts), scale = alpha / R (PEFT's `lora_alpha / r`;
alpha / sqrt(R) with rsLoRA). A and B are `nnx.LoRAParam`s: the train step differentiates and the optimiser
updates only those (`TRAINABLE`), and the base weights stay where they are, shared, never copied per adapter.
Each adapter's sharding follows its base weight's logical axes with the rank axis unsharded.

Targets are regexes over module paths (`layers.3.attn.q_proj`, `layers.3.mlp.down_proj`), searched (re.search);
only the `Einsum` projections are candidates (the embedding, the unembedding and the norms never are). Every
rule must match a module: a rule that matches nothing is an error naming it (a silently empty rule trains
nothing and still reports a loss going down).

PEFT layout (what `peft.PeftModel.from_pretrained` reads): `adapter_config.json` and
`adapter_model.safetensors` with `base_model.model.<HF module>.lora_A.weight` [R, in] and `lora_B.weight`
[out, R]. The HF module names come from model/hf.py's name table, so every family maps the same way.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh
from safetensors import safe_open
from safetensors.numpy import save_file

from monitor_jax.errors import CheckpointError, ConfigError
from monitor_jax.settings import setting

# Attention and MLP projections of every family (the usual LoRA recipe, and PEFT's "all-linear" on a decoder
# without the unembedding).
DEFAULT_TARGETS = r"attn\.[qkvo]_proj$ mlp\.(gate|up|down)_proj$"
TRAINABLE = nnx.LoRAParam                                   # what a LoRA run trains
FROZEN = nnx.All(nnx.Param, nnx.Not(nnx.LoRAParam))        # what it does not
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """The `lora` config section: rank 0 trains every parameter; rank > 0 trains adapters only."""
    rank: int = setting(0, "LoRA rank R (0 = full fine-tuning; > 0 = train adapters only, base frozen)", low=0)
    alpha: float = setting(16.0, "LoRA alpha: the update is scaled by alpha / rank (PEFT's lora_alpha)", low=0.0)
    targets: str = setting(DEFAULT_TARGETS, "whitespace-separated regexes over module paths (layers.N.attn.q_proj, "
                           "layers.N.mlp.down_proj, ...), each searched; every one must match a projection")
    rslora: bool = setting(False, "rank-stabilised scale alpha / sqrt(rank) (PEFT's use_rslora)")
    seed: int = setting(0, "initialisation of the A matrices (B starts at 0, so the model starts as the base)",
                        low=0)


def scale(rank: int, alpha: float, rslora: bool = False) -> float:
    return alpha / (math.sqrt(rank) if rslora else rank)


class Adapter(nnx.Module):
    """`scale · (x A) B` for a projection `einsum(spec, x, W)` whose kernel has `n_in` input dims first."""

    def __init__(self, spec: str, kernel_shape: Sequence[int], axes: tuple, rank: int, scale_: float, dtype,
                 param_dtype, key: jax.Array):
        lhs, rest = spec.split(",")
        kernel, out = rest.split("->")
        n_in = sum(ch in lhs for ch in kernel)
        ins, outs = kernel[:n_in], kernel[n_in:]
        batch = "".join(ch for ch in lhs if ch not in ins)
        self.down, self.up = f"{lhs},{ins}R->{batch}R", f"{batch}R,R{outs}->{out}"
        self.scale, self.dtype = scale_, jnp.dtype(dtype)
        fan_in = math.prod(kernel_shape[:n_in])
        # PEFT's init: A ~ kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(fan_in), 1/sqrt(fan_in)); B = 0.
        bound = 1.0 / math.sqrt(fan_in)
        a = jax.random.uniform(key, (*kernel_shape[:n_in], rank), jnp.float32, -bound, bound)
        self.a = nnx.LoRAParam(a.astype(param_dtype), logical_axes=(*axes[:n_in], None))
        self.b = nnx.LoRAParam(jnp.zeros((rank, *kernel_shape[n_in:]), param_dtype), logical_axes=(None, *axes[n_in:]))

    def __call__(self, x: jax.Array) -> jax.Array:
        h = jnp.einsum(self.down, x.astype(self.dtype), self.a[...].astype(self.dtype))
        return jnp.einsum(self.up, h, self.b[...].astype(self.dtype)) * jnp.asarray(self.scale, self.dtype)

    def delta(self) -> jax.Array:
        """scale · A B in the kernel's shape, in float32 (the merge)."""
        a, b = self.a[...].astype(jnp.float32), self.b[...].astype(jnp.float32)
        n_in = a.ndim - 1
        ab = a.reshape(-1, a.shape[-1]) @ b.reshape(b.shape[0], -1)
        return (ab * self.scale).reshape(*a.shape[:n_in], *b.shape[1:])


@dataclasses.dataclass(frozen=True)
class Adapters:
    """What was adapted: rank, alpha, rsLoRA, and the module paths (dotted) in graph order."""
    rank: int
    alpha: float
    rslora: bool
    modules: tuple[str, ...]

    @property
    def scale(self) -> float:
        return scale(self.rank, self.alpha, self.rslora)


def _path(path: tuple) -> str:
    return ".".join(map(str, path))


def projections(model: nnx.Module) -> dict[str, nnx.Module]:
    """Every adaptable projection (the `Einsum` modules), by dotted path, in graph order (nnx.iter_modules)."""
    from monitor_jax.model.transformer import Einsum

    return {_path(p): m for p, m in nnx.iter_modules(model) if isinstance(m, Einsum)}


def match(model: nnx.Module, rules: Sequence[str]) -> dict[str, list[str]]:
    """rule -> the projection paths it matches; a rule that is not a regex or matches nothing is a ConfigError."""
    paths = list(projections(model))
    out = {}
    for rule in rules:
        try:
            pattern = re.compile(rule)
        except re.error as e:
            raise ConfigError(f"lora.targets: {rule!r} is not a regular expression ({e})") from None
        hits = [p for p in paths if pattern.search(p)]
        if not hits:
            leaves = sorted({p.rsplit(".", 1)[1] for p in paths})
            raise ConfigError(f"lora.targets: the rule {rule!r} matches no module; module paths look like "
                              f"{paths[0]!r} ({len(paths)} projections, named {', '.join(leaves)})")
        out[rule] = hits
    return out


def select(model: nnx.Module, rules: Sequence[str]) -> tuple[list[str], dict[str, list[str]]]:
    """(the projections any rule matches, in graph order; rule -> its matches), checked by `match`."""
    matches = match(model, rules)
    hit = {p for paths in matches.values() for p in paths}
    return [p for p in projections(model) if p in hit], matches


def add_adapters(model: nnx.Module, modules: Sequence[str], rank: int, alpha: float, rslora: bool = False, *,
                 seed: int = 0, mesh: Mesh | None = None) -> Adapters:
    """Give each projection in `modules` an adapter (A random, B = 0: the model's outputs do not change), each
    created directly on its sharding (the base weight's axes, rank unsharded)."""
    from monitor_jax.model.create import variable_sharding

    if rank <= 0:
        raise ConfigError(f"lora.rank={rank} must be positive to add adapters")
    by_path = projections(model)
    cfg = model.cfg
    s = scale(rank, alpha, rslora)
    built: dict[tuple, tuple] = {}      # one compiled initialiser per projection kind (not per layer)
    for i, name in enumerate(modules):
        proj = by_path[name]
        kernel = proj.kernel
        axes = kernel.get_metadata()["logical_axes"]
        kind = (proj.spec, tuple(kernel.shape), tuple(axes))
        if kind not in built:
            # Adapters are float32 parameters whatever model.param_dtype (docs/precision.md): they are what a
            # LoRA run updates, and a bfloat16 weight loses updates below its ulp; they compute in model.dtype.
            make = lambda k, kind=kind: Adapter(kind[0], kind[1], kind[2], rank, s, cfg.dtype, "float32", k)
            abstract = nnx.eval_shape(lambda: make(jax.random.key(0)))
            shardings = jax.tree.map(lambda v: variable_sharding(v, mesh, cfg.sharding_rules), nnx.state(abstract),
                                     is_leaf=lambda x: isinstance(x, nnx.Variable))
            built[kind] = (nnx.graphdef(abstract),
                           jax.jit(lambda k, make=make: nnx.state(make(k)), out_shardings=shardings))
        graphdef, init = built[kind]
        proj.lora = nnx.merge(graphdef, init(jax.random.fold_in(jax.random.key(seed), i)))
    return Adapters(rank, float(alpha), bool(rslora), tuple(modules))


def adapted(model: nnx.Module) -> dict[str, Adapter]:
    """The adapters a model carries, by the dotted path of the projection they adapt."""
    return {p: m.lora for p, m in projections(model).items() if m.lora is not None}


def summary(matches: dict[str, list[str]], model: nnx.Module) -> list[str]:
    """One line per rule: how many modules and adapter parameters it matched (what the run prints)."""
    by_path = adapted(model)
    lines = []
    for rule, paths in matches.items():
        n = sum(by_path[p].a.size + by_path[p].b.size for p in paths)
        lines.append(f"lora: rule {rule!r} matched {len(paths)} module(s), {n:,} adapter parameters")
    return lines


def merged(model: nnx.Module) -> nnx.Module:
    """The plain model with every adapter folded into its kernel (W + scale·AB, in float32, then the parameter
    dtype): what transformers loads as an ordinary checkpoint. `model` is not changed."""
    from monitor_jax.model.create import abstract_model

    flat = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    for name, adapter in adapted(model).items():
        path = tuple(int(p) if p.isdigit() else p for p in name.split(".")) + ("kernel",)
        w = flat[path]
        flat[path] = w.replace((w[...].astype(jnp.float32) + adapter.delta()).astype(w[...].dtype))
    plain = {k: v for k, v in flat.items() if "lora" not in k}
    return nnx.merge(nnx.graphdef(abstract_model(model.cfg)), nnx.from_flat_state(plain))


# ------------------------------------------------------------------ PEFT files
def hf_modules(cfg) -> dict[str, str]:
    """Our projection path -> its Hugging Face module name (model/hf.py's table without `.weight`).

    PEFT names modules as the live transformers model does, not as its files do: a Gemma 3 multimodal model's
    text decoder is model.language_model.* (transformers >= 4.52) whichever layout its checkpoint uses."""
    from monitor_jax.model.hf import hf_names

    if cfg.multimodal_layout:
        cfg = cfg.replace(multimodal_layout="new")
    out = {}
    for ours, (hf_key, _) in hf_names(cfg).items():
        if ours[-1] == "kernel" and hf_key.endswith(".weight"):
            out[_path(ours[:-1])] = hf_key[: -len(".weight")]
    return out


def save_peft(model: nnx.Module, path: str | os.PathLike, base_model: str, dtype: str | None = None) -> Path:
    """Write the model's adapters in the PEFT layout (`peft.PeftModel.from_pretrained(base, path)` loads them),
    in `dtype` (default float32, the adapters' own)."""
    from monitor_jax.model.hf import _to_host

    path = Path(path)
    cfg = model.cfg
    adapters = adapted(model)
    if not adapters:
        raise CheckpointError("the model has no LoRA adapters to export")
    names = hf_modules(cfg)
    np_dtype = np.dtype(jnp.dtype(dtype or "float32"))
    first = next(iter(adapters.values()))
    rank = first.a.shape[-1]
    tensors = {}
    for ours, ad in adapters.items():
        a, b = _to_host(ad.a[...]), _to_host(ad.b[...])
        key = PEFT_PREFIX + names[ours]
        tensors[key + ".lora_A.weight"] = np.ascontiguousarray(a.reshape(-1, rank).T.astype(np_dtype))
        tensors[key + ".lora_B.weight"] = np.ascontiguousarray(b.reshape(rank, -1).T.astype(np_dtype))
    leaves = sorted({names[p].rsplit(".", 1)[1] for p in adapters})
    every = {p for p in names if names[p].rsplit(".", 1)[1] in leaves}
    # Short names when every layer's module of that name is adapted (PEFT matches name suffixes); else the exact
    # module names, so PEFT adapts what was trained and nothing else. A multimodal model always gets exact names:
    # its vision tower has q_proj, k_proj and v_proj modules too.
    short = every == set(adapters) and not cfg.multimodal_layout
    targets = leaves if short else sorted(names[p] for p in adapters)
    alpha = first.scale * rank      # plain LoRA's lora_alpha for our scale (an rsLoRA scale included)
    alpha = int(alpha) if float(alpha).is_integer() else alpha
    config = dict(peft_type="LORA", task_type="CAUSAL_LM", r=int(rank), lora_alpha=alpha, use_rslora=False,
                  target_modules=targets, base_model_name_or_path=str(base_model), lora_dropout=0.0, bias="none",
                  fan_in_fan_out=False, init_lora_weights=True, modules_to_save=None, use_dora=False,
                  rank_pattern={}, alpha_pattern={}, inference_mode=True)
    if jax.process_index() == 0:
        path.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(path / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        (path / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True))
    return path


# PEFT options this importer understands, with the value that means "off"; anything else set is refused.
_PEFT_OFF = dict(use_dora=False, rank_pattern={}, alpha_pattern={}, modules_to_save=None, bias="none",
                 fan_in_fan_out=False, layers_to_transform=None, layers_pattern=None, megatron_config=None,
                 layer_replication=None, lora_bias=False, use_qalora=False, target_parameters=None,
                 trainable_token_indices=None, exclude_modules=None)


@dataclasses.dataclass(frozen=True)
class PeftAdapter:
    """A PEFT LoRA directory, read and checked: rank, alpha, rsLoRA, its tensors by our module path."""
    path: Path
    rank: int
    alpha: float
    rslora: bool
    weights: dict[str, tuple[np.ndarray, np.ndarray]]    # our path -> (lora_A [R, in], lora_B [out, R])
    dropout: float


def read_peft(path: str | os.PathLike, cfg) -> PeftAdapter:
    """Read a PEFT LoRA adapter for a model of config `cfg`; every unsupported option is a CheckpointError naming
    the option and the file."""
    path = Path(path)
    config_file = path / ADAPTER_CONFIG
    if not config_file.is_file():
        raise CheckpointError(f"model.adapter={str(path)!r}: {config_file} does not exist (a PEFT adapter directory "
                              f"has {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS})")
    try:
        conf = json.loads(config_file.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{config_file} line {e.lineno}: invalid JSON ({e.msg})") from None
    if conf.get("peft_type") != "LORA":
        raise CheckpointError(f"{config_file}: peft_type={conf.get('peft_type')!r} is not supported (LORA only)")
    for option, off in _PEFT_OFF.items():
        value = conf.get(option, off)
        if value is not None and value != off:
            raise CheckpointError(f"{config_file}: {option}={conf[option]!r} is not supported (only plain LoRA: "
                                  f"{option}={off!r})")
    init = conf.get("init_lora_weights", True)
    if init not in (True, False, "gaussian"):   # the other inits (pissa, olora, loftq...) change the base weights
        raise CheckpointError(f"{config_file}: init_lora_weights={init!r} is not supported (it changes the base "
                              f"weights PEFT loads the adapter onto)")
    rank, alpha = conf.get("r"), conf.get("lora_alpha")
    if not isinstance(rank, int) or rank <= 0:
        raise CheckpointError(f"{config_file}: r={rank!r} must be a positive integer")
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool):
        raise CheckpointError(f"{config_file}: lora_alpha={alpha!r} must be a number")
    weights_file = path / ADAPTER_WEIGHTS
    if not weights_file.is_file():
        raise CheckpointError(f"{weights_file} does not exist (adapters saved as .bin are not read: convert them "
                              f"with PEFT's save_pretrained(safe_serialization=True))")
    by_hf = {hf: ours for ours, hf in hf_modules(cfg).items()}
    tensors: dict[str, dict[str, np.ndarray]] = {}
    with safe_open(weights_file, framework="numpy") as st:
        for key in st.keys():
            m = re.fullmatch(r"base_model\.model\.(.+)\.lora_([AB])(?:\.default)?\.weight", key)
            module = m and next((by_hf[n] for n in _spellings(m.group(1)) if n in by_hf), None)
            if not module:
                raise CheckpointError(f"{weights_file}: tensor {key} is not a LoRA weight of a projection this "
                                      f"{cfg.family} model has")
            tensors.setdefault(module, {})[m.group(2)] = st.get_tensor(key)
    if not tensors:
        raise CheckpointError(f"{weights_file} holds no LoRA tensors")
    weights = {}
    for module, ab in tensors.items():
        if set(ab) != {"A", "B"}:
            raise CheckpointError(f"{weights_file}: {module} has lora_{next(iter(ab))} but not its pair")
        a, b = ab["A"], ab["B"]
        if a.shape[0] != rank or b.shape[1] != rank:
            raise CheckpointError(f"{weights_file}: {module} lora_A {a.shape} / lora_B {b.shape} do not have rank "
                                  f"r={rank} of {ADAPTER_CONFIG}")
        weights[module] = (a, b)
    order = [p for p in hf_modules(cfg) if p in weights]
    return PeftAdapter(path, rank, float(alpha), bool(conf.get("use_rslora", False)),
                       {p: weights[p] for p in order}, float(conf.get("lora_dropout", 0.0)))


def _spellings(name: str) -> list[str]:
    """A PEFT module name as written, and as the other transformers versions name the same Gemma 3 text module:
    model.language_model.X (>= 4.52, multimodal), language_model.model.X (<= 4.51), model.X (text-only)."""
    out = [name]
    for old, new in (("model.language_model.", "model."), ("language_model.model.", "model.language_model."),
                     ("language_model.model.", "model.")):
        if name.startswith(old):
            out.append(new + name[len(old):])
    return out


def load_peft(model: nnx.Module, adapter: PeftAdapter, mesh: Mesh | None = None) -> Adapters:
    """Add `adapter`'s modules to `model` and set their weights (A [R, in] -> ours [in dims..., R])."""
    from monitor_jax.model.create import variable_sharding

    info = add_adapters(model, list(adapter.weights), adapter.rank, adapter.alpha, adapter.rslora, mesh=mesh)
    by_path = adapted(model)
    for name, (a_rxin, b_outxr) in adapter.weights.items():
        ad = by_path[name]
        for var, host in ((ad.a, a_rxin.T), (ad.b, b_outxr.T)):
            if math.prod(host.shape) != var.size:
                raise CheckpointError(f"{adapter.path / ADAPTER_WEIGHTS}: {name} has {host.shape} but the model's "
                                      f"projection needs {var.shape}")
            value = np.asarray(host, dtype=np.dtype(var[...].dtype)).reshape(var.shape)
            sharding = variable_sharding(var, mesh, model.cfg.sharding_rules)
            var.set_value(jax.make_array_from_callback(var.shape, sharding, lambda idx, v=value: v[idx]))
    return info


# ------------------------------------------------------------------ the base model's fingerprint
def fingerprint(path: str | os.PathLike, samples: int = 8, block: int = 1 << 16) -> str:
    """A cheap content fingerprint of a checkpoint directory's files: each file's name, size and SHA-256 of its
    first MiB (the safetensors header and more) and `samples` evenly spaced blocks. Reads ~1.5 MiB per file, not
    the 16 GB: enough to tell another checkpoint, a re-conversion or a truncated copy from the base a LoRA run
    was trained on (an edit to an unsampled byte would pass)."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.iterdir() if p.is_file() and (p.suffix == ".safetensors" or p.name == "config.json"))
    for f in files:
        size = f.stat().st_size
        h.update(f"{f.name}:{size}:".encode())
        with open(f, "rb") as fh:
            h.update(fh.read(1 << 20))
            for k in range(samples):
                fh.seek(max(0, (size - block) * (k + 1) // samples))
                h.update(fh.read(block))
    return h.hexdigest()[:32]
