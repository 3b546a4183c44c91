"""`plan`: does a run fit, and how long would its step take, on hardware you do not have? Nothing runs.

    python -m monitor_jax.main plan --config=FILE --topology=v5e-64
    python -m monitor_jax.main plan --config=FILE --devices=8 --hbm_gib=80 --peak_tflops=989   # a GPU node
    python -m monitor_jax.main plan --config=FILE --devices=8 --platform=cpu --hbm_gib=16 --peak_tflops=1

The config's train step (full fine-tuning or LoRA, its dtypes, remat, mesh, batch and length) and its scorer
are compiled over the target's devices from abstract shapes (no weights are read: a model directory needs only
its config.json). A TPU slice compiles with the TPU compiler on libtpu's abstract topology; GPUs and CPUs
compile on simulated CPU devices. For a GPU that stands in for its compiler: the CPU compiler keeps far more a
layer than a GPU's would, so a GPU's memory is the smallest depth's program grown by what each further layer
holds (planner.held_by_layers). A model of more than
PLAN_LAYERS_MAX layers is compiled at two smaller depths and extrapolated by layer (said in the output), unless
--full_depth asks for every layer (exact, and slow: minutes a compile for an 8B model).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from monitor_jax import assemble
from monitor_jax.config import model_config, section, validate
from monitor_jax.data.encode import batch_template
from monitor_jax.errors import EXIT_OK, ConfigError
from monitor_jax.eval.scoring import SCORED_FIELDS, score_batch
from monitor_jax.generate.decode import generate_batch
from monitor_jax.model import lora
from monitor_jax.model.config import ModelConfig
from monitor_jax.model.create import state_shardings
from monitor_jax.model.flops import score_flops, train_flops
from monitor_jax.model.transformer import Transformer
from monitor_jax.parallel.mesh import batch_split, make_mesh
from monitor_jax.parallel.multihost import batch_sharding
from monitor_jax.parallel.planner import (DoesNotFit, Stats, abstract, by_layers, bytes_per_device, compile_or_report,
                                          compiled_stats, held_by_layers, largest_batch, search_largest_batch)
from monitor_jax.parallel.topology import GIB, Target, device_target, tpu_target
from monitor_jax.data.mixing import optax_schedule
from monitor_jax.train.step import TrainState, jit_train_step, make_train_step, opt_state_shardings

PLAN_LAYERS_MAX = 8        # deeper models compile at two smaller depths and extrapolate by layer
REEXEC = "MONITOR_JAX_PLAN_DEVICES"   # set when the command restarted itself with N simulated devices


# ------------------------------------------------------------------ the model, abstract
def plan_model_config(c, layers: int | None = None) -> ModelConfig:
    """The run's ModelConfig without weights or tokenizer files being read beyond config.json (a random-init
    model's vocabulary is the tokenizer's); `layers` cuts the depth (layer types kept in order)."""
    overrides = section(c, "model").overrides()
    if c.model.hf_path:
        path = Path(assemble.hf_path(c))
        if not (path / "config.json").is_file():
            raise ConfigError(f"model.hf_path={c.model.hf_path}: {path / 'config.json'} does not exist")
        cfg = ModelConfig.from_hf(json.loads((path / "config.json").read_text()), **overrides)
    else:
        cfg = model_config(c, _tokenizer_vocab(c))
    if layers is not None and layers < cfg.num_layers:
        cfg = dataclasses.replace(cfg, num_layers=layers, layer_types=tuple(cfg.layer_types[:layers]))
    return cfg


def _tokenizer_vocab(c) -> int:
    from monitor_jax.model.tokenizer import load_tokenizer

    if c.model.tokenizer == "demo":      # built in a temporary directory: plan writes nothing
        from monitor_jax.data import demo

        with tempfile.TemporaryDirectory() as tmp:
            demo.build_demo_tokenizer(Path(tmp))
            return load_tokenizer(tmp).vocab_size
    return load_tokenizer(c.model.tokenizer).vocab_size


def abstract_model(c, cfg: ModelConfig, mesh) -> tuple[nnx.GraphDef, nnx.State, nnx.State | None]:
    """(graphdef, trained parameters, frozen parameters or None) as sharded ShapeDtypeStructs: the model, and in
    a LoRA run its adapters (over `lora.targets`), exactly as the run would build them."""
    lc = section(c, "lora")

    def build():
        m = Transformer(cfg, rngs=nnx.Rngs(0))
        if lc.rank:
            lora.add_adapters(m, lora.select(m, lc.targets.split())[0], lc.rank, lc.alpha, lc.rslora, mesh=mesh)
        return m

    m = nnx.eval_shape(build)
    graphdef, state = nnx.split(m)
    shardings = state_shardings(state, mesh, cfg.sharding_rules)
    state = abstract(state, shardings)
    if not lc.rank:
        return graphdef, state, None
    trained = nnx.state(nnx.merge(graphdef, state), lora.TRAINABLE)
    frozen = nnx.state(nnx.merge(graphdef, state), nnx.All(nnx.Param, nnx.Not(lora.TRAINABLE)))
    return graphdef, trained, frozen


# ------------------------------------------------------------------ the three programs
def compile_train(c, cfg: ModelConfig, mesh, batch_size: int):
    """The run's train step compiled for `mesh` at `batch_size` rows: (compiled, params, opt_state, frozen)."""
    graphdef, params, frozen = abstract_model(c, cfg, mesh)
    optimizer = assemble.optimizer(c)
    opt_state = abstract(jax.eval_shape(optimizer.init, params), opt_state_shardings(optimizer, params, mesh))
    replicated = NamedSharding(mesh, PartitionSpec())
    state = TrainState(jax.ShapeDtypeStruct((), np.int32, sharding=replicated), params, opt_state)
    loss_cfg = section(c, "loss", instruction=bool(c.data.instruction), num_tasks=len(c.data.classification))
    step_fn = make_train_step(graphdef, optimizer, loss_cfg, optax_schedule(**loss_cfg.cls_weight),
                              optax_schedule(**loss_cfg.sft_weight))
    host = batch_template(batch_size, c.data.max_length, 0, c.data.pack_classification)
    batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=batch_sharding(mesh, v.ndim, cfg.sharding_rules))
             for k, v in host.items()}
    with jax.set_mesh(mesh):
        jitted = jit_train_step(step_fn, state, mesh, host, cfg.sharding_rules, frozen)
        args = (state, batch) if frozen is None else (state, batch, frozen)
        compiled = compile_or_report(jitted.lower(*args))
    return compiled, params, opt_state, frozen


def _whole(params, frozen):
    return params if frozen is None else nnx.merge_state(frozen, params)


def compile_scorer(c, cfg: ModelConfig, mesh, batch_size: int, length: int):
    """The scorer's jitted program (eval/scoring.py: score_batch) for one batch of the largest bucket."""
    graphdef, params, frozen = abstract_model(c, cfg, mesh)
    params = _whole(params, frozen)
    shapes = dict(tokens=(batch_size, length), segment_ids=(batch_size, length), label_position=(batch_size,),
                  positive_id=(batch_size,), negative_id=(batch_size,))
    batch = {k: jax.ShapeDtypeStruct(shapes[k], np.int32,
                                     sharding=batch_sharding(mesh, len(shapes[k]), cfg.sharding_rules))
             for k in SCORED_FIELDS}
    with jax.set_mesh(mesh):
        fn = jax.jit(lambda p, b: score_batch(graphdef, p, b), out_shardings=NamedSharding(mesh, PartitionSpec()))
        return compile_or_report(fn.lower(params, batch)), params


def compile_sampler(c, cfg: ModelConfig, mesh, batch_size: int, prompt_length: int, new_tokens: int):
    """The sampler's jitted prefill + decode loop (generate/decode.py) for one batch."""
    graphdef, params, frozen = abstract_model(c, cfg, mesh)
    params = _whole(params, frozen)
    spec = dict(tokens=((batch_size, prompt_length), np.int32), mask=((batch_size, prompt_length), np.int32),
                row_id=((batch_size,), np.int32), active=((batch_size,), np.bool_))
    batch = {k: jax.ShapeDtypeStruct(s, d, sharding=batch_sharding(mesh, len(s), cfg.sharding_rules))
             for k, (s, d) in spec.items()}
    replicated = NamedSharding(mesh, PartitionSpec())
    settings = {k: jax.ShapeDtypeStruct((), d, sharding=replicated) for k, d in
                (("temperature", np.float32), ("top_k", np.int32), ("top_p", np.float32), ("seed", np.int32),
                 ("budget", np.int32))}
    settings["stop_ids"] = jax.ShapeDtypeStruct((8,), np.int32, sharding=replicated)
    with jax.set_mesh(mesh):
        fn = jax.jit(lambda p, b, s: generate_batch(graphdef, p, b, s, capacity=new_tokens))
        return compile_or_report(fn.lower(params, batch, settings)), params


# ------------------------------------------------------------------ measuring, by layer where the model is deep
def _period(cfg: ModelConfig) -> int:
    """The length of the layer-type pattern (1, or e.g. 6 for Gemma 3's five sliding layers and one global)."""
    types = tuple(cfg.layer_types)
    return next((p for p in range(1, len(types) + 1) if types == (types[:p] * len(types))[:len(types)]), 1) \
        if types else 1


def _depths(cfg: ModelConfig, smallest: bool = False) -> tuple[int, int] | None:
    """Two depths to compile at and extrapolate from (whole periods of the layer-type pattern); None: compile
    the whole model. `smallest`: one period and two, whatever the depth (a GPU's estimate starts from the
    fewest layers, whose transients the CPU compiler counts once)."""
    period = _period(cfg)
    if smallest:
        return (period, 2 * period) if 2 * period <= cfg.num_layers else None
    if cfg.num_layers <= PLAN_LAYERS_MAX:
        return None
    small = period * max(1, -(-2 // period))
    return (small, 2 * small) if 2 * small < cfg.num_layers else None


def _at_depth(cfg: ModelConfig, layers: int) -> ModelConfig:
    return dataclasses.replace(cfg, num_layers=layers, layer_types=cfg.layer_types[:layers])


def measure(compile_fn, cfg: ModelConfig, saved_per_layer: float = 0.0, full_depth: bool = False,
            held_per_layer: float | None = None) -> tuple[Stats, str]:
    """compile_fn(cfg) -> compiled; its Stats at full depth, or extrapolated from two depths (and how).
    `saved_per_layer`: the bytes a device keeps a layer for the backward pass at least (planner.by_layers).
    `held_per_layer`: for a compiler stood in for (a GPU's, compiled on CPU), what a layer holds besides its
    arguments; the figures then grow by exactly that from the smallest depth (planner.held_by_layers)."""
    if held_per_layer is not None:
        depths = _depths(cfg, smallest=True)
        if depths is not None:
            la, lb = depths
            a, b = (compiled_stats(compile_fn(_at_depth(cfg, n))) for n in (la, lb))
            how = (f"compiled with {la} and {lb} of {cfg.num_layers} layers; memory estimated for the GPU: the "
                   f"{la}-layer program's, each further layer adding its arguments and "
                   f"{_bytes(held_per_layer)} it holds (gradients, saved input), not the CPU compiler's growth")
            return held_by_layers(a, b, la, lb, cfg.num_layers, held_per_layer), how
    depths = None if full_depth else _depths(cfg)
    if depths is None:
        return compiled_stats(compile_fn(cfg)), f"compiled with all {cfg.num_layers} layers"
    la, lb = depths
    a, b = (compiled_stats(compile_fn(_at_depth(cfg, n))) for n in (la, lb))
    stats, floored = by_layers(a, b, la, lb, cfg.num_layers, saved_per_layer)
    how = (f"compiled with {la} and {lb} of {cfg.num_layers} layers and extrapolated by layer (an estimate: near the "
           f"memory limit the whole program rematerialises more than shallow ones, so confirm a batch with "
           f"--full_depth)")
    if floored:
        how += (f" (the peak grew less a layer than a layer's arguments and saved input: it was set by a buffer the "
                f"depth does not change, so the total grows by those instead, a lower bound; --full_depth "
                f"compiles every layer)")
    return stats, how


def _measure_or_refusal(compile_fn, cfg: ModelConfig, saved_per_layer: float = 0.0, full_depth: bool = False,
                        held_per_layer: float | None = None) -> tuple[Stats | str, str]:
    """measure(), or the target compiler's out-of-memory refusal (a str) where it refused the program."""
    try:
        return measure(compile_fn, cfg, saved_per_layer, full_depth, held_per_layer)
    except DoesNotFit as e:
        return str(e), ""


def _figures(stats: Stats | str, stats2: Stats | str | None, batch: int, hbm: int, multiple: int,
             row_floor: float = 0.0) -> dict:
    """A program's memory figures at `batch` and the largest batch that fits, from the measurement at 2 x batch
    (growing at least `row_floor` a row); where the compiler refused the program, its reason instead."""
    if isinstance(stats, str):
        return dict(refused=stats, total=None, fits=False, largest_batch=None, flops=None)
    figures = dict(dataclasses.asdict(stats), total=stats.total, fits=stats.total <= hbm, refused="",
                   row_floor=row_floor)
    if isinstance(stats2, Stats):
        measured = (stats2.total - stats.total) / batch
        figures.update(per_row_measured=measured, per_row=max(measured, row_floor),
                       largest_batch=largest_batch(stats.total, stats2.total, batch, 2 * batch, hbm, multiple,
                                                   row_floor))
    else:    # 2 x batch was refused: the largest batch lies between the two
        figures["largest_batch"] = batch if figures["fits"] else 0
    return figures


def _saved_input_bytes(cfg: ModelConfig, rows: float, length: int, split: int) -> float:
    """Bytes a device keeps a layer for the backward pass at least, for `rows` rows of the batch: every layer
    keeps its input ([T, D] a row in the compute dtype), even under full remat; the batch is split over `split`
    devices (times the gradient-accumulation steps, which hold one micro-batch at a time)."""
    return rows * length * cfg.embed_dim * np.dtype(cfg.dtype).itemsize / split


def _trained_bytes_per_layer(c, cfg: ModelConfig, mesh, trained_bytes: int) -> float:
    """Bytes a device holds of one layer's trained parameters (so of its gradients), from the whole model's
    `trained_bytes` and an abstract model one layer-type period deep (nothing compiled)."""
    period = _period(cfg)
    if period >= cfg.num_layers:
        return trained_bytes / cfg.num_layers
    _, shallow, _ = abstract_model(c, _at_depth(cfg, period), mesh)
    return (trained_bytes - bytes_per_device(shallow)) / (cfg.num_layers - period)


def _label_positions(c, batch_size: int) -> tuple[float, float]:
    """(classification labels, instruction rows) per step, averaged over the run's mixing schedule."""
    from monitor_jax.data.mixing import classification_rows, make_schedule

    n_cls = classification_rows(make_schedule(**dict(c.data.mixing)), np.arange(c.train.steps),
                                batch_size).mean()
    slots = max(c.data.pack_classification, 1)
    return float(n_cls * slots), float(batch_size - n_cls)


# ------------------------------------------------------------------ the command
def target_from_flags(flags) -> Target:
    if flags.topology and flags.devices:
        raise ConfigError("give --topology (a TPU slice) or --devices with --hbm_gib and --peak_tflops, not both")
    if flags.topology:
        # Compiling for a slice needs no local accelerator: never take this machine's (a TPU VM's chips may be
        # training). Effective while no backend has started, which is the case for a command that runs nothing.
        jax.config.update("jax_platforms", "cpu")
        # A persistent compilation cache stores the TPU executables but cannot read them back without a TPU
        # client (jax warns on every hit): plan compiles once anyway.
        jax.config.update("jax_enable_compilation_cache", False)
        return tpu_target(flags.topology)
    if not flags.devices:
        raise ConfigError("plan needs a target: --topology=v5e-64 (a TPU slice), or --devices=N --hbm_gib=G "
                          "--peak_tflops=T (e.g. one H100 node: --devices=8 --hbm_gib=80 --peak_tflops=989)")
    for name in ("hbm_gib", "peak_tflops"):
        if getattr(flags, name) <= 0:
            raise ConfigError(f"--devices needs --{name} > 0 (the memory and dense bf16 peak of one device)")
    _simulate_devices(flags.devices)
    return device_target(flags.devices, flags.hbm_gib, flags.peak_tflops, flags.platform)


def _simulate_devices(n: int) -> None:
    """Restart this command with `n` simulated CPU devices unless it has them (XLA reads the count at start)."""
    if len(jax.devices("cpu")) >= n:
        return
    if os.environ.get(REEXEC):
        raise ConfigError(f"--devices={n}: could not start with {n} simulated CPU devices (XLA_FLAGS)")
    env = dict(os.environ, JAX_PLATFORMS="cpu", **{REEXEC: str(n)})
    env["XLA_FLAGS"] = " ".join([f for f in env.get("XLA_FLAGS", "").split()
                                 if "xla_force_host_platform_device_count" not in f]
                                + [f"--xla_force_host_platform_device_count={n}"])
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, "-m", "monitor_jax.main", *sys.argv[1:]], env)


def plan(c, target: Target, mfu: float, full_depth: bool = False, search_rounds: int = 4) -> dict:
    """Every figure of the plan (per device), as a dict; `report` prints it."""
    validate(c, target.num_devices)
    if target.platform == "gpu" and full_depth:
        raise ConfigError("--full_depth compiles with the target's own compiler, and a GPU's is not available "
                          "here: a GPU's memory is estimated by layer (docs/scaling.md)")
    mesh = make_mesh(**dict(c.mesh), devices=list(target.devices))
    cfg = plan_model_config(c)
    lc = section(c, "lora")
    split = batch_split(mesh)
    b, t = c.train.batch_size, c.data.max_length
    multiple = split * c.loss.grad_accum

    # Parameters and optimizer state at full depth, from abstract shapes and their shardings (nothing compiled).
    _, params, frozen = abstract_model(c, cfg, mesh)
    optimizer = assemble.optimizer(c)
    opt_state = abstract(jax.eval_shape(optimizer.init, params), opt_state_shardings(optimizer, params, mesh))

    # The train step keeps every layer's input for the backward pass: per layer at b and 2b rows, and per row
    # over all layers, the least its memory can grow (the extrapolations never grow less).
    split_accum = split * c.loss.grad_accum
    # A GPU is compiled for on CPU devices, whose compiler keeps far more a layer than a GPU's would: its memory
    # is the smallest depth's, grown by what each further layer holds (planner.held_by_layers). Under full
    # remat a layer holds its gradients and its input; under another policy what the policy saves, which only
    # the compile knows, so the CPU compiler's own growth is used and the plan says so.
    gpu = target.platform == "gpu"
    by_held = gpu and cfg.remat == "full"
    grads_per_layer = _trained_bytes_per_layer(c, cfg, mesh, bytes_per_device(params)) if by_held else 0.0

    def held(batch: int) -> float | None:
        return grads_per_layer + _saved_input_bytes(cfg, batch, t, split_accum) if by_held else None

    def train_at(batch: int) -> tuple[Stats | str, str]:
        return _measure_or_refusal(lambda m: compile_train(c, m, mesh, batch)[0], cfg,
                                   _saved_input_bytes(cfg, batch, t, split_accum), full_depth, held(batch))

    train, how = train_at(b)
    if gpu and not by_held and how:
        how += (f"; model.remat={cfg.remat}: what a layer keeps for the backward pass depends on the policy, so the "
                f"train step's memory is the CPU compiler's own (likely well above a GPU's; docs/scaling.md)")
    train2 = train_at(2 * b)[0] if isinstance(train, Stats) else None
    row_floor = cfg.num_layers * _saved_input_bytes(cfg, 1, t, split_accum)
    train_figures = _figures(train, train2, b, target.hbm_bytes, multiple, row_floor)
    if train_figures["largest_batch"] is not None and search_rounds > 0:   # the estimate compiled, corrected
        def total_at(batch):
            stats = train_at(batch)[0]
            return stats.total if isinstance(stats, Stats) else None

        estimate = train_figures["largest_batch"]
        measured = {k: (v.total if isinstance(v, Stats) else None) for k, v in ((b, train), (2 * b, train2))}
        largest, totals = search_largest_batch(total_at, measured, estimate, target.hbm_bytes, multiple,
                                               row_floor, rounds=search_rounds)
        train_figures.update(largest_batch=largest, largest_estimate=estimate,
                             batches_compiled=[[k, totals[k]] for k in sorted(totals)])
    e = c.eval
    score_len = max(e.buckets)
    # A forward pass keeps nothing of a layer once the next has run (held 0 a layer on a GPU).
    scored_held = 0.0 if gpu else None
    score, score_how = _measure_or_refusal(lambda m: compile_scorer(c, m, mesh, e.batch_size, score_len)[0], cfg,
                                           full_depth=full_depth, held_per_layer=scored_held)
    score2, _ = _measure_or_refusal(lambda m: compile_scorer(c, m, mesh, 2 * e.batch_size, score_len)[0], cfg,
                                    full_depth=full_depth, held_per_layer=scored_held) if score else (None, "")

    labels, instruction_rows = _label_positions(c, b)
    targets = tuple(lc.targets.split()) if lc.rank else ()
    # What the step computes: the instruction loss unembeds every position of the batch whenever it holds an
    # instruction row (train/losses.py: instruction_loss chunks over all rows), not only the instruction rows'.
    computed = train_flops(cfg, b, t, labels, b * t if c.data.instruction and instruction_rows else 0,
                           lc.rank, targets)
    needed = train_flops(cfg, b, t, labels, instruction_rows * t, lc.rank, targets)
    scored = score_flops(cfg, e.batch_size, score_len, lc.rank, targets)
    n = target.num_devices
    hbm = target.hbm_bytes
    return dict(
        target=target.name, devices=n, hosts=target.hosts, target_compiler=target.target_compiler,
        platform=target.platform, hbm=hbm, peak_flops=target.peak_flops, mfu=mfu, depth=how, score_depth=score_how,
        model=dict(family=cfg.family, layers=cfg.num_layers, embed=cfg.embed_dim, vocab=cfg.vocab_size,
                   param_dtype=cfg.param_dtype, dtype=cfg.dtype, remat=cfg.remat, attention=cfg.attention,
                   lora_rank=lc.rank),
        mesh=dict(mesh.shape), batch=b, length=t, grad_accum=c.loss.grad_accum,
        train=dict(params=bytes_per_device(params) + (bytes_per_device(frozen) if frozen is not None else 0),
                   trained=bytes_per_device(params), optimizer=bytes_per_device(opt_state),
                   gradients=bytes_per_device(params), **train_figures,
                   flops_analytic=computed.total / n, flops_needed=needed.total / n,
                   step_s_at_peak=computed.total / n / target.peak_flops,
                   step_s_at_mfu=computed.total / n / (target.peak_flops * mfu)),
        score=dict(batch=e.batch_size, length=score_len, **_figures(score, score2, e.batch_size, hbm, split),
                   flops_analytic=scored.total / n,
                   batch_s_at_mfu=scored.total / n / (target.peak_flops * mfu)),
    )


def _bytes(x: float) -> str:
    return f"{x / GIB:.2f} GiB" if abs(x) >= GIB / 4 else f"{x / (1 << 20):.1f} MiB"


def _seconds(x: float) -> str:
    return f"{x:.3f} s" if x >= 1 else f"{1e3 * x:.2f} ms"


def _flops(x: float) -> str:
    return f"{x / 1e12:.3f} TFLOP" if x >= 1e11 else f"{x / 1e9:.3f} GFLOP"


def _memory(fig: dict, batch: int, hbm: float) -> list[str]:
    if fig["refused"]:
        return [f"  DOES NOT FIT: the target's compiler refused it: {fig['refused']}"]
    verdict = "FITS" if fig["fits"] else "DOES NOT FIT"
    return [f"  arguments           {_bytes(fig['arguments'])}   outputs {_bytes(fig['outputs'])}   aliased "
            f"(donated) {_bytes(fig['aliased'])}",
            f"  temporaries         {_bytes(fig['temporaries'])}   XLA peak {_bytes(fig['peak'])}",
            f"  total               {_bytes(fig['total'])} of {_bytes(hbm)}: {verdict} "
            f"({100 * fig['total'] / hbm:.0f}%)",
            f"  largest batch that fits  {fig['largest_batch']} ({_growth(fig, batch)})", *_searched(fig, hbm)]


def _searched(fig: dict, hbm: float) -> list[str]:
    """The batches compiled on the way to the largest batch, where its estimate was checked (train step)."""
    compiled = fig.get("batches_compiled")
    if not compiled:
        return []
    shown = ", ".join(f"{k}: {'refused' if v is None else _bytes(v)}" + ("" if v is not None and v <= hbm else
                                                                          " (no)") for k, v in compiled)
    return [f"  batches compiled     {shown}; the line's estimate was {fig['largest_estimate']}"]


def _growth(fig: dict, batch: int) -> str:
    """How the largest batch was found: the measured growth a row, or the layers' saved inputs where the
    measured memory grew less (its peak then sits where a buffer the batch does not change is live, and the
    line through it would promise rows that cannot fit; docs/scaling.md)."""
    measured = fig.get("per_row_measured")
    if measured is None:
        return f"{2 * batch} rows were refused"
    if measured >= fig["row_floor"] or not fig["row_floor"]:
        return f"memory linear in the batch between {batch} and {2 * batch}, measured: {_bytes(measured)} a row"
    return (f"memory grew {_bytes(measured)} a row between {batch} and {2 * batch}, less than the "
            f"{_bytes(fig['row_floor'])} a row the layers' saved inputs need: grown by those, a conservative "
            f"estimate")


def report(p: dict) -> str:
    """The plan as the command prints it."""
    tr, sc, m = p["train"], p["score"], p["model"]
    mesh = " x ".join(f"{k}={v}" for k, v in p["mesh"].items())
    what = f"LoRA rank {m['lora_rank']}" if m["lora_rank"] else "full fine-tuning"
    compiler = {"tpu": "the TPU compiler (libtpu) on the abstract topology",
                "cpu": "XLA CPU on simulated devices (the target's own compiler)",
                "gpu": "XLA CPU on simulated devices standing in for the GPU's (jax has no abstract GPU backend): "
                       "argument bytes and FLOPs are exact, memory is estimated"}[p.get("platform", "tpu")]
    mfu = f"{100 * p['mfu']:.0f}% MFU"
    counted = "" if tr["flops"] is None else f" (compiled count {_flops(tr['flops'])}: XLA counts a loop body once)"
    lines = [
        f"plan: {m['family']} ({m['layers']} layers, d={m['embed']}, vocab {m['vocab']}; params {m['param_dtype']}, "
        f"compute {m['dtype']}, remat {m['remat']}), {what}",
        f"target: {p['target']}: {p['devices']} devices on {p['hosts']} host(s), {_bytes(p['hbm'])} and "
        f"{p['peak_flops'] / 1e12:g} TFLOP/s each; mesh {mesh}",
        f"compiler: {compiler}; {p['depth'] or 'refused before a depth was measured'}",
        "",
        f"train step, batch {p['batch']} x length {p['length']} (grad_accum {p['grad_accum']}), per device:",
        f"  parameters          {_bytes(tr['params'])} (trained {_bytes(tr['trained'])})",
        f"  optimizer state     {_bytes(tr['optimizer'])}",
        f"  gradients           {_bytes(tr['gradients'])} (inside the temporaries)",
        *_memory(tr, p["batch"], p["hbm"]),
        f"  FLOPs               {_flops(tr['flops_analytic'])} analytic{counted}; needed {_flops(tr['flops_needed'])}",
        f"  step time           {_seconds(tr['step_s_at_peak'])} at peak, {_seconds(tr['step_s_at_mfu'])} at {mfu}",
        "",
        f"scorer, batch {sc['batch']} x length {sc['length']}, per device"
        + (f" ({p['score_depth']}):" if p.get("score_depth") and p["score_depth"] != p["depth"] else ":"),
        *_memory(sc, sc["batch"], p["hbm"]),
        f"  FLOPs               {_flops(sc['flops_analytic'])} a batch; {_seconds(sc['batch_s_at_mfu'])} at {mfu}",
        "",
        "not known here: host memory and the input pipeline's speed; communication time (the FLOPs-based time "
        "assumes the collectives overlap); the runtime's own reservations and fragmentation (keep ~5-10% of HBM "
        "free); compile time on the target; attention blocks and loss chunks skipped at run time (the analytic "
        "count is dense).",
    ]
    return "\n".join(lines)


def run(config, flags) -> int:
    p = plan(config, target_from_flags(flags), flags.mfu, flags.full_depth, flags.search_rounds)
    if jax.process_index() == 0:
        print(report(p))
        if flags.output:
            Path(flags.output).parent.mkdir(parents=True, exist_ok=True)
            Path(flags.output).write_text(json.dumps(p, indent=2) + "\n")
            print(f"plan written to {flags.output}")
    return EXIT_OK
