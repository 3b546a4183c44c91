"""The experiment config: every key a run reads, with its default. Config files start here.

Config files (`configs/*.py`) define `get_config()` returning `base_config()`
with changes; the command line overrides any key (`--config.train.steps=100`).
The config is locked, so a misspelt key is an error, not a silent default.
"""
from __future__ import annotations

import contextlib
import math
import os
from typing import Any

import ml_collections
import numpy as np

from monitor_jax.data.mixing import check_schedule, classification_rows, make_schedule
from monitor_jax.data.tasks import Task, TaskError, from_spec
from monitor_jax.errors import ConfigError  # noqa: F401  (re-exported for callers)
from monitor_jax.eval.evaluator import unique_names
from monitor_jax.model.attention import KERNELS
from monitor_jax.model.config import DTYPES, REMAT_POLICIES, ModelConfig
from monitor_jax.parallel.mesh import MESH_AXES, mesh_shape
from monitor_jax.train.losses import NORMALIZATIONS
from monitor_jax.train.optimizer import DECAYS


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.workdir = "runs/default"
    c.seed = 0
    # Tasks written here, no Python needed (docs/tasks.md): [{"name", "messages": [[role, template with
    # {field} slots], ...], "positive", "negative", "label_field", "labels", ...}] or {"kind": "instruction", ...}.
    # Items anywhere in the config name them like registered tasks.
    c.tasks = []
    # Where the research's data files are (docs/tasks.md): {"kind": "research", "domain", "split"} sources read
    # DATA_ROOT/DOMAIN/SPLIT.jsonl; "" = the demo suite's synthetic rows of the same domains.
    c.data_root = ""
    c.model = dict(
        hf_path="",             # a Hugging Face checkpoint directory to start from (or a .gguf file, or
                                # package:NAME, the GGUF a pip package ships: converted once, cached), or
        config={},              # ModelConfig fields of a random-init model (vocab from the tokenizer)
        tokenizer="",           # tokenizer directory ("" = hf_path; "demo" = build the demo tokenizer)
        param_dtype="float32", dtype="float32", remat="none",
        attention="flash",      # flash (keys in blocks of attention_block: memory linear in length) | dense
        attention_block=256)    # docs/benchmarks.md: 256 beat 512 at every length on CPU
    c.mesh = dict(data=-1, fsdp=1, tensor=1)
    c.data = dict(
        max_length=512,
        classification=[],      # [{"task", "source": {...}, "weight"}]
        instruction={},         # {"task", "source": {...}, "pack": bool}; {} = none
        mixing={"kind": "constant", "value": 1.0},   # r(step): data.mixing.make_schedule arguments
        # K > 0: pack up to K classification examples of a task into each row (one label slot each); r then
        # shares sequence rows (the token budget), not examples. 0 = one example per row, padded.
        pack_classification=0,
        seed=0)
    c.loss = dict(normalization="per_source", two_token=False, chunk_size=256, grad_accum=1,
                  cls_weight={"kind": "constant", "value": 1.0}, sft_weight={"kind": "constant", "value": 1.0})
    c.optim = dict(lr=1e-5, warmup_steps=0, decay="cosine", end_factor=0.1, b1=0.9, b2=0.95, eps=1e-8,
                   weight_decay=0.0, clip_norm=1.0)
    c.train = dict(steps=1000, batch_size=32, log_every=10, checkpoint_every=500, keep=2,
                   best_metric="", best_mode="max",   # e.g. eval/mean_heldout_auroc
                   run_steps=0,        # stop this process after this many steps (0 = run to the end)
                   export_hf="")       # write a Hugging Face checkpoint here at the end
    c.eval = dict(tasks=[], every=0, batch_size=32, buckets=(128, 256, 512), bootstrap=1000, max_rows=0,
                  pack_max=0)          # > 0: up to that many prompts packed into each row of the largest bucket
    # The sampler (monitor_jax/generate): prompt buckets up to max_prompt_length; cache = bucket + max_new_tokens.
    c.generate = dict(batch_size=8, max_prompt_length=512, max_new_tokens=256, buckets=(128, 256, 512),
                      temperature=0.0, top_k=0, top_p=1.0, seed=0)   # temperature 0 = greedy
    # Unsupervised elicitation (the `elicit` command, commands/elicit.py): the starting model's thinking
    # predictions on unlabeled rows become the pseudo-labels of single-token training; eval.tasks compares.
    c.elicit = dict(
        source={},              # the unlabeled rows (a source spec); label fields are removed as rows are read
        thinking_task="",       # the prompt the starting model reasons under (a task with an answer_marker)
        task="",                # the single-token task trained on the pseudo-labels (its label_field is written)
        max_thinking_tokens=128,
        max_rows=0,             # the first N rows of the source (0 = all)
        keep_quantile=0.0,      # drop the least confident share: keep |log-odds| >= this quantile (0 = keep all)
        supervised=True)        # also train on the same rows' true labels, when the source has them (a ceiling)
    # Sweeps (the `sweep` command, studies/sweep.py): one `train` run per grid point, under WORKDIR/runs/NAME.
    c.sweep = dict(
        grid=(),                # ((config key, (values)) or (key, (values), (display names)), ...): every combination
        seeds=(),               # each seed sets `seed` and `data.seed` (() = the config's own)
        executor="local",       # local: run them here | slurm | kubernetes: write the spec, print how to submit
        parallel=1,             # local: runs at once; run slot k gets devices[k::parallel] in device_env
        device_env="CUDA_VISIBLE_DEVICES", devices=(),
        sbatch={},              # slurm: extra #SBATCH options, e.g. {"time": "04:00:00", "gpus-per-task": 1}
        python="",              # the interpreter in every run's command ("" = this one; e.g. "python" in images)
        image="",               # kubernetes: an image with monitor_jax installed and WORKDIR mounted at its path
        resources={})           # kubernetes: the container's resources, e.g. {"limits": {"nvidia.com/gpu": 1}}
    c.lock()
    return c


# Numeric keys and their ranges: (low, high, what); None = unbounded. Checked before anything is built.
RANGES = {
    "seed": (0, None), "model.attention_block": (1, None), "data.max_length": (1, None), "data.seed": (0, None),
    "loss.chunk_size": (1, None), "loss.grad_accum": (1, None),
    "optim.lr": (0.0, None), "optim.warmup_steps": (0, None), "optim.end_factor": (0.0, None),
    "optim.b1": (0.0, 1.0), "optim.b2": (0.0, 1.0), "optim.eps": (0.0, None), "optim.weight_decay": (0.0, None),
    "optim.clip_norm": (0.0, None),
    "train.steps": (1, None), "train.batch_size": (1, None), "train.log_every": (1, None),
    "train.checkpoint_every": (1, None), "train.keep": (1, None), "train.run_steps": (0, None),
    "eval.every": (0, None), "eval.batch_size": (1, None), "eval.bootstrap": (0, None), "eval.max_rows": (0, None),
    "eval.pack_max": (0, None), "data.pack_classification": (0, None),
    "generate.batch_size": (1, None), "generate.max_prompt_length": (1, None), "generate.max_new_tokens": (1, None),
    "generate.temperature": (0.0, None), "generate.top_k": (0, None), "generate.top_p": (1e-9, 1.0),
    "generate.seed": (0, None),
    "elicit.max_thinking_tokens": (1, None), "elicit.max_rows": (0, None), "elicit.keep_quantile": (0.0, 1.0),
    "sweep.parallel": (1, None),
}
INTEGER_KEYS = ("generate.batch_size", "generate.max_prompt_length", "generate.max_new_tokens", "generate.top_k",
                "generate.seed", "elicit.max_thinking_tokens", "elicit.max_rows", "sweep.parallel")
SWEEP_EXECUTORS = ("local", "slurm", "kubernetes")
CHOICES = {"sweep.executor": SWEEP_EXECUTORS, "loss.normalization": NORMALIZATIONS, "optim.decay": DECAYS,
           "model.remat": REMAT_POLICIES,
           "model.attention": KERNELS, "model.param_dtype": DTYPES, "model.dtype": DTYPES,
           "train.best_mode": ("max", "min")}


EVAL_ITEM_KEYS = {"task", "source", "heldout", "calibration", "name", "mode", "max_thinking_tokens",
                  "max_summary_tokens", "judge_task", "judge"}
# thinking: the monitor reasons before it is scored (eval/thinking.py); summarize: it summarizes and a judge
# scores the summary (eval/summarize.py).
EVAL_MODES = ("single_token", "thinking", "summarize")
MODE_KEYS = {"thinking": ("max_thinking_tokens",), "summarize": ("max_summary_tokens", "judge_task", "judge")}


def model_overrides(c: ml_collections.ConfigDict) -> dict[str, Any]:
    """The `model` keys that apply to any model, random-init or imported (dtypes, remat, attention)."""
    return dict(param_dtype=c.model.param_dtype, dtype=c.model.dtype, remat=c.model.remat,
                attention=c.model.attention, attention_block=c.model.attention_block)


def model_config(c: ml_collections.ConfigDict, vocab_size: int) -> ModelConfig:
    """The random-init model `model.config` describes; a bad field is a ConfigError naming it."""
    try:
        return ModelConfig(vocab_size=vocab_size, **dict(c.model.config), **model_overrides(c))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"model.config: {e}") from None


def eval_names(c: ml_collections.ConfigDict) -> list[str]:
    """Each eval item's name (its own, else its task's, made unique): report rows and eval/NAME/ metrics."""
    return unique_names([item["task"] for item in c.eval.tasks], [item.get("name") for item in c.eval.tasks])


def _get(c: ml_collections.ConfigDict, key: str) -> Any:
    for part in key.split("."):
        c = c[part]
    return c


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


def _check_ranges(c: ml_collections.ConfigDict) -> None:
    for key, (low, high) in RANGES.items():
        v = _get(c, key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ConfigError(f"{key}={v!r} must be a finite number")
        if v < low or (high is not None and v > high):
            bound = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise ConfigError(f"{key}={v!r} must be {bound}")
    for key, choices in CHOICES.items():
        if _get(c, key) not in choices:
            raise ConfigError(f"{key}={_get(c, key)!r}; choose one of {choices}")
    for key in INTEGER_KEYS:
        if not isinstance(_get(c, key), int):
            raise ConfigError(f"{key}={_get(c, key)!r} must be an integer")
    for key in ("eval.buckets", "generate.buckets"):
        buckets = list(_get(c, key))
        if not buckets or any(isinstance(b, bool) or not isinstance(b, int) or b <= 0 for b in buckets):
            raise ConfigError(f"{key}={tuple(buckets)} must be positive prompt lengths")


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
    """Every research source's file exists under data_root; a data_root no source reads is an error too."""
    from monitor_jax.data import research

    research_specs = [(k, s) for k, s in source_specs(c, training)
                      if hasattr(s, "get") and s.get("kind") == "research"]
    for key, spec in research_specs:
        missing = [k for k in ("domain", "split") if k not in spec]
        if missing:
            raise ConfigError(f"{key}: a research source needs domain and split; {sorted(spec)} lacks {missing}")
    if not c.data_root:
        return
    if not os.path.isdir(c.data_root):
        raise ConfigError(f"data_root={c.data_root!r} is not a directory")
    if not research_specs:
        raise ConfigError(f"data_root={c.data_root!r} is set but no source reads it (no source has kind "
                          f"'research'); remove it or use research sources")
    for key, spec in research_specs:
        path = research.data_file(c.data_root, spec["domain"], spec["split"])
        if not os.path.isfile(path):
            raise ConfigError(f"{key}: {path} does not exist (data_root={c.data_root!r}; the file layout is "
                              f"DATA_ROOT/DOMAIN/SPLIT.jsonl, docs/tasks.md)")


def _check_eval_items(c: ml_collections.ConfigDict) -> None:
    for i, item in enumerate(c.eval.tasks):
        for key in ("task", "source"):
            if key not in item:
                raise ConfigError(f"eval.tasks[{i}] lacks {key!r} (has {sorted(item)})")
        unknown = sorted(set(item) - EVAL_ITEM_KEYS)
        if unknown:
            raise ConfigError(f"eval.tasks[{i}] has unknown key(s) {unknown}; an eval item takes "
                              f"{sorted(EVAL_ITEM_KEYS)}")
        mode = item.get("mode", "single_token")
        if mode not in EVAL_MODES:
            raise ConfigError(f"eval.tasks[{i}].mode={mode!r}; choose one of {EVAL_MODES}")
        for other, keys in MODE_KEYS.items():
            stray = [k for k in keys if k in item and other != mode]
            if stray:
                raise ConfigError(f"eval.tasks[{i}].{stray[0]} is set but mode is {mode!r} (set mode={other!r})")
        if mode in MODE_KEYS:
            budget_key = MODE_KEYS[mode][0]
            budget = item.get(budget_key)
            if isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0:
                raise ConfigError(f"eval.tasks[{i}].{budget_key}={budget!r}: {mode} mode needs a positive integer "
                                  f"budget")
            if item.get("calibration"):
                raise ConfigError(f"eval.tasks[{i}]: calibration is not supported in {mode} mode")
        if mode == "summarize" and not item.get("judge_task"):
            raise ConfigError(f"eval.tasks[{i}]: summarize mode needs judge_task (the task whose prompt, over "
                              f"{{summary}} alone, the judge answers)")
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
