"""The training loop: data, model, jitted step, evaluation, orbax checkpoints, logging.

A run is a work directory. Starting a run whose work directory holds
checkpoints resumes from the latest: parameters, optimiser state, step and the
data iterator's position, so the resumed run sees exactly the batches the
uninterrupted run would have.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import signal
import time
from pathlib import Path
from typing import Any

import grain
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from tqdm import tqdm

from monitor_jax import checkpoints
from monitor_jax.config import validate
from monitor_jax.errors import CheckpointError, ConfigError, NonFiniteError
from monitor_jax.data import tasks as task_registry
from monitor_jax.data.encode import ClassificationEncoder, InstructionEncoder
from monitor_jax.data.mixing import make_schedule, optax_schedule
from monitor_jax.data.pipeline import open_rows, train_batches
from monitor_jax.eval.evaluator import Evaluator
from monitor_jax.model import ModelConfig, create_model, load_hf
from monitor_jax.model.tokenizer import Tokenizer, load_tokenizer
from monitor_jax.parallel import make_mesh
from monitor_jax.parallel.multihost import global_batch
from monitor_jax.train.optimizer import adamw
from monitor_jax.train.step import LossConfig, TrainState, init_state, jit_train_step, make_train_step

log = logging.getLogger("monitor_jax.train")


class NonFiniteLoss(NonFiniteError):
    """The loss became NaN or Inf; the run stopped and kept its last good checkpoint."""


# ------------------------------------------------------------------ building blocks
def build_tokenizer(c: ml_collections.ConfigDict) -> tuple[Tokenizer, str]:
    """(tokenizer, its directory)."""
    if c.model.tokenizer == "demo":
        from monitor_jax.data import demo

        path = Path(c.workdir) / "tokenizer"
        if not (path / "tokenizer.json").exists():
            if jax.process_index() == 0:
                demo.build_demo_tokenizer(path)
            _sync("demo tokenizer")
        return load_tokenizer(path), str(path)
    path = c.model.tokenizer or c.model.hf_path
    return load_tokenizer(path), str(path)


def build_model(c: ml_collections.ConfigDict, mesh, tokenizer: Tokenizer):
    overrides = dict(param_dtype=c.model.param_dtype, dtype=c.model.dtype, remat=c.model.remat,
                     attention=c.model.attention, attention_block=c.model.attention_block)
    if c.model.hf_path:
        model, cfg = load_hf(c.model.hf_path, mesh=mesh, **overrides)
        check_vocab(cfg.vocab_size, tokenizer, c.model.hf_path)
        return model
    try:
        cfg = ModelConfig(vocab_size=tokenizer.vocab_size, **dict(c.model.config), **overrides)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"model.config: {e}") from None
    return create_model(cfg, mesh=mesh, seed=c.seed)


def check_vocab(model_vocab: int, tokenizer: Tokenizer, model_path: str) -> None:
    """Every token id must index the embedding: an id past it reads NaN (jnp.take's fill), silently."""
    if model_vocab < tokenizer.vocab_size:
        raise CheckpointError(f"model {model_path} has a vocabulary of {model_vocab} but the tokenizer "
                              f"{tokenizer.hf.name_or_path} has {tokenizer.vocab_size} tokens: ids {model_vocab}.."
                              f"{tokenizer.vocab_size - 1} fall outside the embedding; use the checkpoint's own "
                              f"tokenizer (model.tokenizer)")


def build_train_data(c: ml_collections.ConfigDict, tokenizer: Tokenizer) -> grain.MapDataset:
    length = c.data.max_length
    cls = []
    for k, item in enumerate(c.data.classification):
        task = task_registry.get(item["task"])
        cls.append((open_rows(item["source"]), ClassificationEncoder(task, tokenizer, length, task_id=k),
                    float(item.get("weight", 1.0))))
    instr = None
    if c.data.instruction:
        item = dict(c.data.instruction)
        task = task_registry.get(item["task"])
        instr = (open_rows(item["source"]), InstructionEncoder(task, tokenizer, length, task_id=len(cls)),
                 bool(item.get("pack", False)))
    return train_batches(cls, instr, make_schedule(**dict(c.data.mixing)), batch_size=c.train.batch_size,
                         num_steps=c.train.steps, length=length, pad_id=tokenizer.pad_id,
                         seed=c.data.seed, process_index=jax.process_index(),
                         process_count=jax.process_count())


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)


def checkpoint_manager(c: ml_collections.ConfigDict) -> ocp.CheckpointManager:
    return checkpoints.manager(Path(c.workdir).resolve() / "checkpoints", keep=c.train.keep,
                               best_metric=c.train.best_metric, best_mode=c.train.best_mode)


class MetricsWriter:
    """JSONL and TensorBoard in the work directory, on process 0."""

    def __init__(self, workdir: str):
        self.active = jax.process_index() == 0
        if self.active:
            from tensorboardX import SummaryWriter

            Path(workdir).mkdir(parents=True, exist_ok=True)
            self.jsonl = open(Path(workdir) / "metrics.jsonl", "a")
            self.tb = SummaryWriter(str(Path(workdir) / "tensorboard"))

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.active:
            return
        self.jsonl.write(json.dumps({"step": step, **metrics}) + "\n")
        self.jsonl.flush()
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and np.isfinite(v):
                self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self.active:
            self.jsonl.close()
            self.tb.close()


# ------------------------------------------------------------------ the run
@dataclasses.dataclass
class RunResult:
    step: int
    status: str                         # finished | preempted | paused
    metrics: dict[str, Any]
    eval_before: dict[str, Any] | None
    eval_after: dict[str, Any] | None
    state: TrainState | None = None
    compilations: int = 0


def train(c: ml_collections.ConfigDict) -> RunResult:
    """Train (or resume) the run `c` describes."""
    validate(c, jax.device_count())
    mesh = make_mesh(**dict(c.mesh))
    tokenizer, tokenizer_dir = build_tokenizer(c)
    model = build_model(c, mesh, tokenizer)
    rules = model.cfg.sharding_rules
    optimizer = adamw(c.optim, c.train.steps)
    state = init_state(model, optimizer, mesh)
    graphdef = nnx.graphdef(model)
    data = build_train_data(c, tokenizer)
    data_iter = data.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)).__iter__()
    evaluator = Evaluator.from_config(c, tokenizer, graphdef, mesh) if c.eval.tasks else None

    mngr = checkpoint_manager(c)
    abstract_state = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    # A damaged newest checkpoint is skipped (moved aside, with a warning) when an older one restores.
    start, restored = checkpoints.restore_newest_intact(
        mngr, lambda: ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                         data=grain.checkpoint.CheckpointRestore(data_iter)), c.workdir)
    if restored is not None:
        state = restored["state"]
        log.info("resumed from %s at step %d", mngr.directory, start)
    else:
        start = 0
    if start == 0 and jax.process_index() == 0:
        Path(c.workdir).mkdir(parents=True, exist_ok=True)
        (Path(c.workdir) / "config.json").write_text(c.to_json_best_effort(indent=2))

    loss_cfg = LossConfig(normalization=c.loss.normalization, two_token=c.loss.two_token,
                          chunk_size=min(c.loss.chunk_size, c.data.max_length), grad_accum=c.loss.grad_accum,
                          instruction=bool(c.data.instruction))
    step_fn = make_train_step(graphdef, optimizer, loss_cfg, optax_schedule(**dict(c.loss.cls_weight)),
                              optax_schedule(**dict(c.loss.sft_weight)))
    writer = MetricsWriter(c.workdir)
    # Rows truncated per task since this process started (its slice of the batches it consumed).
    task_names = [item["task"] for item in c.data.classification] + (
        [dict(c.data.instruction)["task"]] if c.data.instruction else [])
    truncated = {name: 0 for name in task_names}
    # SIGTERM (preemption, `kubectl delete`, Slurm) and SIGINT (Ctrl-C in a notebook or TPU VM shell): finish
    # the step, save, and return status "preempted" (the CLI exits EXIT_PREEMPTED so orchestrators retry).
    # A second Ctrl-C interrupts at once.
    preempted: list[str] = []

    def on_signal(signum, frame):
        if signum == signal.SIGINT and preempted:
            raise KeyboardInterrupt
        preempted.append(signal.Signals(signum).name)

    handled = (signal.SIGTERM, signal.SIGINT)
    previous = {s: signal.signal(s, on_signal) for s in handled} if _main_thread() else {}

    def save(step: int, eval_metrics: dict | None, force: bool = False) -> None:
        metrics = {k: v for k, v in (eval_metrics or {}).items() if isinstance(v, float)}
        mngr.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(data_iter),
            config=ocp.args.JsonSave(json.loads(c.to_json_best_effort()))),
            metrics=metrics or None, force=force)
        # orbax finished every earlier save before starting this one: seal those (the integrity record).
        checkpoints.seal_completed(mngr, exclude=(step,))

    eval_before = evaluator.run(state.params, step=start) if evaluator and start == 0 else None
    if eval_before:
        writer.write(start, eval_before["flat"])
    end = c.train.steps if not c.train.run_steps else min(c.train.steps, start + c.train.run_steps)
    jitted = None
    pending = None                      # (step, metrics on device, host stats) checked one step late
    last_metrics: dict[str, Any] = {}
    status = "finished"
    bar = tqdm(total=c.train.steps, initial=start, disable=jax.process_index() != 0, desc="train")
    t_last, tokens_since = time.perf_counter(), 0

    def check(pending) -> dict[str, Any]:
        step, metrics, host = pending
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        # A finite loss with non-finite gradients or parameters would still poison the state.
        if not all(np.isfinite(metrics[k]) for k in ("loss", "grad_norm", "param_norm")):
            mngr.wait_until_finished()
            raise NonFiniteLoss(f"non-finite training at step {step}: loss={metrics['loss']} (cls_loss="
                                f"{metrics['cls_loss']}, sft_loss={metrics['sft_loss']}), grad_norm="
                                f"{metrics['grad_norm']}, param_norm={metrics['param_norm']}. Stopped without "
                                f"saving; the last good checkpoint is step {mngr.latest_step()} in {mngr.directory}")
        return {**metrics, **host}

    try:
        with jax.set_mesh(mesh):
            for step in range(start, end):
                host_batch = next(data_iter)
                batch = global_batch(host_batch, mesh, rules)
                if jitted is None:
                    jitted = jit_train_step(step_fn, state, mesh, host_batch, rules)
                state, metrics = jitted(state, batch)
                for t, n in zip(host_batch["task_id"], host_batch["truncated"]):
                    truncated[task_names[int(t)]] += int(n)
                host = dict(tokens=int((host_batch["segment_ids"] > 0).sum()) * jax.process_count(),
                            **{f"truncated/{k}": v for k, v in truncated.items()},
                            data_hash=int(np.frombuffer(host_batch["tokens"].tobytes(), np.uint32).sum() % 2**31))
                if pending is not None:   # the previous step's metrics, while this one runs
                    last_metrics = check(pending)
                pending = (step, metrics, host)
                tokens_since += host["tokens"]
                done = step + 1
                bar.update(1)
                eval_now = evaluator and c.eval.every and done % c.eval.every == 0
                save_now = done % c.train.checkpoint_every == 0 or done == end or preempted
                if done % c.train.log_every == 0 or eval_now or save_now:
                    last_metrics = check(pending)
                    pending = None
                    now = time.perf_counter()
                    last_metrics["tokens_per_s"] = tokens_since / (now - t_last)
                    t_last, tokens_since = now, 0
                    writer.write(done, {f"train/{k}": v for k, v in last_metrics.items()})
                    bar.set_postfix(loss=f"{last_metrics['loss']:.4f}", tok_s=f"{last_metrics['tokens_per_s']:.0f}")
                eval_metrics = None
                if eval_now:
                    eval_metrics = evaluator.run(state.params, step=done)["flat"]
                    writer.write(done, eval_metrics)
                if save_now:
                    if c.train.best_metric and eval_metrics is None and evaluator:
                        eval_metrics = evaluator.run(state.params, step=done)["flat"]
                        writer.write(done, eval_metrics)
                    save(done, eval_metrics, force=True)
                if preempted:
                    status = "preempted"
                    log.warning("%s: saved step %d and stopped; run the same command to resume", preempted[0], done)
                    break
            if pending is not None:
                last_metrics = check(pending)
    finally:
        bar.close()
        mngr.wait_until_finished()
        checkpoints.seal_completed(mngr)
        mngr.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
        writer.close()
    final_step = int(jax.device_get(state.step))
    if status == "finished" and final_step < c.train.steps:
        status = "paused"
    eval_after = None
    if status == "finished":
        eval_after = evaluator.run(state.params, step=final_step) if evaluator else None
        if c.train.export_hf:
            from monitor_jax.model import save_hf

            save_hf(nnx.merge(graphdef, state.params), c.train.export_hf, tokenizer=tokenizer_dir)
    return RunResult(final_step, status, last_metrics, eval_before, eval_after, state,
                     jitted._cache_size() if jitted is not None else 0)
