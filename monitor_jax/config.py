"""The experiment config: every key a run reads, with its default. Config files start here.

Config files (`configs/*.py`) define `get_config()` returning `base_config()`
with changes; the command line overrides any key (`--config.train.steps=100`).
The config is locked, so a misspelt key is an error, not a silent default.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from typing import Any

import ml_collections
import numpy as np

from monitor_jax import settings
from monitor_jax.data.mixing import DataConfig, check_schedule, classification_rows, make_schedule
from monitor_jax.data.tasks import Task, TaskError, from_spec
from monitor_jax.errors import ConfigError  # noqa: F401  (re-exported for callers)
from monitor_jax.eval import modes
from monitor_jax.eval.evaluator import EvalConfig, item_names
from monitor_jax.generate.sampler import GenerateConfig
from monitor_jax.model.config import ModelConfig, ModelSettings
from monitor_jax.model.lora import LoraConfig
from monitor_jax.parallel.mesh import MESH_AXES, MeshConfig, mesh_shape
from monitor_jax.settings import setting
from monitor_jax.studies.elicitation import ElicitConfig
from monitor_jax.studies.sweep import SweepConfig
from monitor_jax.train.optimizer import OptimConfig
from monitor_jax.train.step import LossConfig
from monitor_jax.train.trainer import LoopConfig


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """The top-level keys: where the run lives, its seed, and the tasks and data it names."""
    workdir: str = setting("runs/default", "the run's directory: checkpoints, metrics, reports (a local or mounted "
                           "path)")
    seed: int = setting(0, "the model's initialisation seed", low=0)
    tasks: list = setting([], "tasks written in the config, no Python needed (docs/tasks.md): [{'name', 'messages': "
                          "[[role, template with {field} slots], ...], 'positive', 'negative', ...}]; config items "
                          "name them like registered tasks", check=False)
    data_root: str = setting("", "where the research's data files are: {'kind': 'research', 'domain', 'split'} "
                             "sources read DATA_ROOT/DOMAIN/SPLIT.jsonl ('' = the demo suite's synthetic rows)")


# Every config section and the dataclass that declares its keys ("" = the top level), in the order config
# files list them. A new section is one line here; a new key is one field of its dataclass.
SECTIONS = {"": RunConfig, "model": ModelSettings, "lora": LoraConfig, "mesh": MeshConfig, "data": DataConfig,
            "loss": LossConfig, "optim": OptimConfig, "train": LoopConfig, "eval": EvalConfig, "generate": GenerateConfig,
            "elicit": ElicitConfig, "sweep": SweepConfig}


def base_config(sections: dict | None = None) -> ml_collections.ConfigDict:
    """Every key with its default, from the declarations of `sections` (default: SECTIONS), locked."""
    c = ml_collections.ConfigDict()
    for prefix, cls in (sections or SECTIONS).items():
        if prefix:
            c[prefix] = settings.defaults(cls)
        else:
            for key, value in settings.defaults(cls).items():
                c[key] = value
    c.lock()
    return c


def section(c: ml_collections.ConfigDict, name: str, **extra: Any):
    """Config section `name` as the dataclass that declares it (what library code takes), plus `extra`
    derived fields that are not settings."""
    return settings.build(SECTIONS[name], c if name == "" else c[name], **extra)


def model_config(c: ml_collections.ConfigDict, vocab_size: int) -> ModelConfig:
    """The random-init model `model.config` describes; a bad field is a ConfigError naming it."""
    try:
        return ModelConfig(vocab_size=vocab_size, **dict(c.model.config), **section(c, "model").overrides())
    except (TypeError, ValueError) as e:
        raise ConfigError(f"model.config: {e}") from None


def eval_names(c: ml_collections.ConfigDict) -> list[str]:
    """Each eval item's name (its own, else its task's, made unique): report rows and eval/NAME/ metrics."""
    return item_names(c.eval.tasks)


def inline_tasks(c: ml_collections.ConfigDict) -> dict[str, Task]:
    """The config's own tasks (`tasks`), by name; a bad one is a ConfigError naming its key."""
    out = {}
    for i, spec in enumerate(c.tasks):
        if not hasattr(spec, "keys"):
            raise ConfigError(f"tasks[{i}]={spec!r} must be a dict (docs/tasks.md)")
        try:
            task = from_spec(spec, f"tasks[{i}]")
        except TaskError as e:
            msg = str(e)
            raise ConfigError(msg if msg.startswith(f"tasks[{i}]") else f"tasks[{i}]: {msg}") from None
        if task.name in out:
            raise ConfigError(f"tasks[{i}].name={task.name!r} is given to another item of tasks too")
        out[task.name] = task
    return out


def _check_ranges(c: ml_collections.ConfigDict, sections: dict | None = None) -> None:
    """Each declared key's type, range or choices (settings.check), named by key."""
    for prefix, cls in (sections or SECTIONS).items():
        settings.check(cls, c if not prefix else c[prefix], prefix)


def _check_sources(c: ml_collections.ConfigDict) -> None:
    for i, item in enumerate(c.data.classification):
        for key in ("task", "source"):
            if key not in item:
                raise ConfigError(f"data.classification[{i}] lacks {key!r} (has {sorted(item)})")
        weight = item.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not (0 < weight < math.inf):
            raise ConfigError(f"data.classification[{i}].weight={weight!r} must be a positive number")
    if c.data.instruction:
        for key in ("task", "source"):
            if key not in c.data.instruction:
                raise ConfigError(f"data.instruction lacks {key!r} (has {sorted(c.data.instruction)})")


def source_specs(c: ml_collections.ConfigDict, training: bool = True) -> list[tuple[str, Any]]:
    """(config key, source spec) of every source the config names; training sources only when `training`."""
    specs = []
    if training:
        specs += [(f"data.classification[{i}].source", item.get("source"))
                  for i, item in enumerate(c.data.classification)]
        if c.data.instruction:
            specs.append(("data.instruction.source", c.data.instruction.get("source")))
    for i, item in enumerate(c.eval.tasks):
        specs += [(f"eval.tasks[{i}].{k}", item[k]) for k in ("source", "calibration") if item.get(k)]
    if c.elicit.source:
        specs.append(("elicit.source", c.elicit.source))
    return [(key, spec) for key, spec in specs if spec]


def _check_data_root(c: ml_collections.ConfigDict, training: bool) -> None:
    """Every source spec is well formed and every research source's file exists under data_root
    (`data/sources: check_spec`); a data_root no source reads is an error too."""
    from monitor_jax.data.sources import check_spec, reads_data_root

    if c.data_root and not os.path.isdir(c.data_root):
        raise ConfigError(f"data_root={c.data_root!r} is not a directory")
    specs = source_specs(c, training)
    for key, spec in specs:
        check_spec(spec, c.data_root, key)
    if c.data_root and not any(reads_data_root(spec) for _, spec in specs):
        raise ConfigError(f"data_root={c.data_root!r} is set but no source reads it (no source has kind "
                          f"'research'); remove it or use research sources")


def _check_eval_items(c: ml_collections.ConfigDict) -> None:
    """Each eval item's keys: the common ones, and those of its mode (eval/modes/: each mode declares and
    checks its own)."""
    allowed = modes.item_keys()
    for i, item in enumerate(c.eval.tasks):
        where = f"eval.tasks[{i}]"
        for key in ("task", "source"):
            if key not in item:
                raise ConfigError(f"{where} lacks {key!r} (has {sorted(item)})")
        unknown = sorted(set(item) - allowed)
        if unknown:
            raise ConfigError(f"{where} has unknown key(s) {unknown}; an eval item takes {sorted(allowed)}")
        name = item.get("mode", modes.DEFAULT)
        if name not in modes.names():
            raise ConfigError(f"{where}.mode={name!r}; choose one of {modes.names()}")
        for other in modes.registered():
            stray = [k for k in other.keys if k in item and other.name != name]
            if stray:
                raise ConfigError(f"{where}.{stray[0]} is set but mode is {name!r} (set mode={other.name!r})")
        modes.get(name).check(item, where)
    names = eval_names(c)
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"eval.tasks: the name(s) {dupes} are given to several items; names must be unique "
                          f"(they key the report rows and the eval/NAME/... metrics)")


def _check_mixing(c: ml_collections.ConfigDict) -> None:
    """Ratios in [0, 1], and every share the schedule asks for has data to fill it."""
    spec = dict(c.data.mixing)
    check_schedule(spec, "data.mixing", unit_interval=True)
    check_schedule(dict(c.loss.cls_weight), "loss.cls_weight", unit_interval=False)
    check_schedule(dict(c.loss.sft_weight), "loss.sft_weight", unit_interval=False)
    # Every step up to a million, then the steps where a piecewise-monotone schedule can turn.
    turns = [spec.get(k) for k in ("steps", "switch_step") if isinstance(spec.get(k), int)] + list(
        spec.get("boundaries", ()))
    candidates = {0, c.train.steps - 1} | {t + d for t in turns for d in (-1, 0)}
    steps = np.union1d(np.arange(min(c.train.steps, 1_000_000)),
                       [t for t in candidates if 0 <= t < c.train.steps]).astype(np.int64)
    schedule = make_schedule(**spec)
    r = schedule(steps)
    rows = classification_rows(schedule, steps, c.train.batch_size)
    if (r > 0).any() and not c.data.classification:
        first = int(np.argmax(r > 0))
        raise ConfigError(f"data.mixing gives a classification share r={r[first]:g} at step {steps[first]} but "
                          f"data.classification is empty; add a classification source or set the ratio to 0")
    if (r < 1).any() and not c.data.instruction:
        first = int(np.argmax(r < 1))
        raise ConfigError(f"data.mixing gives an instruction share 1-r={1 - r[first]:g} at step {steps[first]} but "
                          f"data.instruction is empty; add an instruction source or set the ratio to 1")
    if (r > 0).any() and not rows.any():
        raise ConfigError(f"data.mixing: the largest ratio {r.max():g} rounds to 0 classification rows of "
                          f"train.batch_size={c.train.batch_size} at every step; raise the ratio or the batch size")
    if (r < 1).any() and (rows == c.train.batch_size).all():
        raise ConfigError(f"data.mixing: the smallest ratio {r.min():g} rounds to 0 instruction rows of "
                          f"train.batch_size={c.train.batch_size} at every step; lower the ratio or raise the "
                          f"batch size")


def validate(c: ml_collections.ConfigDict, num_devices: int, training: bool = True) -> None:
    """Checks a run would fail on later, named by key, before anything is built.

    `training=False` (eval, score, export) skips the checks of the training data and schedule.
    """
    _check_ranges(c)
    inline_tasks(c)
    sizes = dict(zip(MESH_AXES, mesh_shape(**dict(c.mesh), num_devices=num_devices)))
    dp = sizes["data"] * sizes["fsdp"]
    if "://" in c.workdir:
        # Checkpoints, metrics and the demo tokenizer are written with local-file APIs.
        raise ConfigError(f"workdir={c.workdir!r}: URLs are not supported; mount the bucket on every host "
                          f"(e.g. gcsfuse BUCKET ~/gcs) and give the mounted path")
    if c.eval.tasks and c.eval.batch_size % dp:
        raise ConfigError(f"eval.batch_size={c.eval.batch_size} is not divisible by data*fsdp={dp}")
    if not c.model.hf_path and not c.model.config:
        raise ConfigError("set model.hf_path (a Hugging Face checkpoint) or model.config (random init)")
    if not c.model.hf_path and not c.model.tokenizer:
        raise ConfigError("model.tokenizer is required when model.hf_path is not set")
    if not c.model.hf_path:
        model_config(c, vocab_size=1)   # the vocabulary comes from the tokenizer later; any size checks the rest
    _check_eval_items(c)
    _check_data_root(c, training)
    if not training:
        return
    t = c.train
    if t.batch_size % c.loss.grad_accum:
        raise ConfigError(f"train.batch_size={t.batch_size} is not divisible by loss.grad_accum={c.loss.grad_accum}")
    if (t.batch_size // c.loss.grad_accum) % dp:
        raise ConfigError(f"train.batch_size={t.batch_size} (per micro-batch {t.batch_size // c.loss.grad_accum}) "
                          f"is not divisible by the data-parallel size data*fsdp={dp} (mesh {sizes})")
    if c.data.max_length % min(c.loss.chunk_size, c.data.max_length):
        raise ConfigError(f"data.max_length={c.data.max_length} is not a multiple of loss.chunk_size="
                          f"{c.loss.chunk_size}")
    if not c.data.classification and not c.data.instruction:
        raise ConfigError("data.classification and data.instruction are both empty: nothing to train on")
    _check_sources(c)
    _check_mixing(c)
    if t.best_metric:
        if not (c.eval.tasks and c.eval.every):
            raise ConfigError(f"train.best_metric={t.best_metric!r} needs eval.tasks and eval.every")
        names = eval_names(c)
        known = ["eval/mean_auroc"] + (["eval/mean_heldout_auroc"] if any(
            item.get("heldout") for item in c.eval.tasks) else []) + [
            f"eval/{name}/{m}" for name in names for m in ("auroc", "loss", "label_mass")]
        if t.best_metric not in known:
            raise ConfigError(f"train.best_metric={t.best_metric!r} is not an eval metric of this config; "
                              f"choose one of {known}")
        if t.checkpoint_every % c.eval.every:
            raise ConfigError(f"train.checkpoint_every={t.checkpoint_every} must be a multiple of eval.every="
                              f"{c.eval.every} so every checkpoint has train.best_metric")


def validate_elicit(c: ml_collections.ConfigDict) -> None:
    """The `elicit` command's keys (after `validate(c, training=False)`)."""
    e = c.elicit
    for key in ("source", "thinking_task", "task"):
        if not e[key]:
            raise ConfigError(f"elicit.{key} is not set; the elicit command needs elicit.source (unlabeled rows), "
                              f"elicit.thinking_task (the prompt the starting model reasons under) and elicit.task "
                              f"(the single-token task trained on the pseudo-labels)")
    if e.keep_quantile >= 1.0:
        raise ConfigError(f"elicit.keep_quantile={e.keep_quantile!r} must be in [0, 1): 1 would keep no row")
    if c.data.classification:
        raise ConfigError("data.classification must be empty for elicit: the elicited run trains elicit.task on the "
                          "pseudo-labels (data.instruction and data.mixing apply as in train)")
    if not c.eval.tasks:
        raise ConfigError("eval.tasks is empty: the elicit report compares monitors on eval sets")


def set_key(c: ml_collections.ConfigDict, key: str, value: Any) -> None:
    """Set the dotted `key` to `value` (a sweep's override); a missing key or a value of another type is a
    ConfigError naming it."""
    *parents, last = key.split(".")
    node = c
    for i, part in enumerate(parents + [last]):
        if not hasattr(node, "keys") or part not in node:
            raise ConfigError(f"config key {'.'.join((parents + [last])[:i + 1])} does not exist (in {key!r})")
        if i < len(parents):
            node = node[part]
    try:
        with node.ignore_type() if isinstance(value, (list, tuple, dict)) else contextlib.nullcontext():
            node[last] = value
    except (TypeError, ValueError, AttributeError) as e:
        raise ConfigError(f"{key}={value!r}: {e}") from None


def sweep_grid(c: ml_collections.ConfigDict) -> tuple[dict[str, list], dict[str, list[str]]]:
    """`sweep.grid` as (key -> values, key -> display names); every key must exist in the config."""
    grid, names = {}, {}
    if not c.sweep.grid and not c.sweep.seeds:
        raise ConfigError("sweep.grid and sweep.seeds are both empty: give [(config key, [values]), ...] or seeds")
    for i, item in enumerate(c.sweep.grid):
        if not (isinstance(item, (list, tuple)) and len(item) in (2, 3) and isinstance(item[0], str)
                and isinstance(item[1], (list, tuple)) and item[1]):
            raise ConfigError(f"sweep.grid[{i}]={item!r} must be (config key, [values]) or (key, [values], [names])")
        key, values = item[0], list(item[1])
        if key in grid:
            raise ConfigError(f"sweep.grid[{i}]: {key} appears twice")
        probe = c.copy_and_resolve_references()
        for v in values:
            set_key(probe, key, v)
        grid[key] = values
        if len(item) == 3:
            if len(item[2]) != len(values) or not all(isinstance(n, str) and n for n in item[2]):
                raise ConfigError(f"sweep.grid[{i}]: the names {item[2]!r} must be one non-empty string per value")
            names[key] = list(item[2])
    for seed in c.sweep.seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"sweep.seeds: {seed!r} is not a non-negative integer")
    return grid, names


def changed_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two configs as plain JSON (a key only one has counts; a
    list is compared whole), sorted: what a sweep names when a finished run's settings changed."""
    out = []
    for key in sorted(set(old) | set(new)):
        name = f"{prefix}.{key}" if prefix else str(key)
        a, b = old.get(key, _ABSENT), new.get(key, _ABSENT)
        if isinstance(a, dict) and isinstance(b, dict):
            out += changed_keys(a, b, name)
        elif a != b:
            out.append(name)
    return out


_ABSENT = object()
