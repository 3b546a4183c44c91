"""The training loop: jitted steps, evaluation with reports, orbax checkpoints, logging, signals.

It takes assembled pieces (monitor_jax.assemble builds them from a config; the
`train` command wires them): a train state, the step function, the data
iterator, a checkpoint manager, an optional evaluator. A resumed run (the
command restores the state and the data iterator's position first) sees exactly
the batches the uninterrupted run would have.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import Mesh
from tqdm import tqdm

from monitor_jax import checkpoints
from monitor_jax.errors import NonFiniteError
from monitor_jax.eval.evaluator import Evaluator
from monitor_jax.eval.report import write_report
from monitor_jax.eval.results import EvalResult
from monitor_jax.parallel.multihost import global_batch
from monitor_jax.settings import setting
from monitor_jax.train.step import TrainState, jit_train_step, model_params

log = logging.getLogger("monitor_jax.train")


class NonFiniteLoss(NonFiniteError):
    """The loss became NaN or Inf; the run stopped and kept its last good checkpoint."""


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """The `train` config section (the loop's, the batch size and checkpoint keeping), plus `eval.every` and
    `eval.before`."""
    steps: int = setting(1000, "the run's total optimizer steps", low=1)
    batch_size: int = setting(32, "rows per step, over all processes (classification + instruction)", low=1)
    log_every: int = setting(10, "steps between logged metrics", low=1)
    checkpoint_every: int = setting(500, "steps between orbax checkpoints", low=1)
    keep: int = setting(2, "checkpoints kept (the best as well, with best_metric)", low=1)
    best_metric: str = setting("", "an eval metric saved with every checkpoint, so the best one is kept (e.g. "
                               "eval/mean_heldout_auroc)")
    best_mode: str = setting("max", "whether the best best_metric is the largest or the smallest",
                             choices=("max", "min"))
    run_steps: int = setting(0, "stop this process after this many steps (0 = run to the end)", low=0)
    export_hf: str = setting("", "write a Hugging Face checkpoint here at the end")
    eval_every: int = 0                 # eval.every: 0 = evaluate only before and after
    eval_before: bool = True            # eval.before: evaluate before the first step


@dataclasses.dataclass
class RunResult:
    step: int
    status: str                         # finished | preempted | paused
    metrics: dict[str, Any]
    eval_before: EvalResult | None
    eval_after: EvalResult | None
    state: TrainState | None = None
    compilations: int = 0


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


class _Signals:
    """SIGTERM (preemption, `kubectl delete`, Slurm) and SIGINT (Ctrl-C in a notebook or a TPU VM shell):
    the loop finishes the step, saves and returns "preempted" (the CLI exits EXIT_PREEMPTED, so orchestrators
    retry). A second Ctrl-C interrupts at once."""

    def __init__(self):
        self.received: list[str] = []
        self.previous: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():   # signal handlers live on the main thread
            self.previous = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}
        return self

    def _handle(self, signum, frame):
        if signum == signal.SIGINT and self.received:
            raise KeyboardInterrupt
        self.received.append(signal.Signals(signum).name)

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def train_loop(state: TrainState, start: int, step_fn: Callable, data_iter, mesh: Mesh, rules,
               mngr: ocp.CheckpointManager, save_args: Callable[[TrainState], ocp.args.CheckpointArgs],
               loop: LoopConfig, writer: MetricsWriter, task_names: Sequence[str],
               evaluator: Evaluator | None = None, report_dir: str | Path | None = None,
               frozen: nnx.State | None = None) -> RunResult:
    """Steps `start`..end; evaluates (writing a report under `report_dir/STEP`), logs, checkpoints.

    `save_args(state)` says what a checkpoint holds; `task_names[task_id]` names the batches' sources;
    `frozen`: the parameters the step reads but does not train (a LoRA run's base weights), None when the
    state holds them all.
    """
    truncated = {name: 0 for name in task_names}    # rows truncated per task, this process's slice

    def save(step: int, eval_metrics: dict | None) -> None:
        metrics = {k: v for k, v in (eval_metrics or {}).items() if isinstance(v, float)}
        mngr.save(step, args=save_args(state), metrics=metrics or None, force=True)
        # orbax finished every earlier save before starting this one: seal those (the integrity record).
        checkpoints.seal_completed(mngr, exclude=(step,))

    last_eval: list[EvalResult] = []     # the latest evaluation

    def evaluate(step: int) -> EvalResult:
        """Evaluate the current parameters; the report goes where `eval --checkpoint=STEP` writes its own."""
        result = evaluator.run(model_params(state.params, frozen), step=step)
        writer.write(step, result.flat)
        if report_dir is not None:
            title = f"checkpoint step {step}" if step else "before training (step 0)"
            source = f"{mngr.directory}/{step}" if step else "the initial parameters"
            write_report(result, Path(report_dir) / str(step), title=title, source=source)
        last_eval[:] = [result]
        return result

    def check(pending) -> dict[str, Any]:
        step, metrics, host = pending
        metrics = jax.device_get(metrics)
        per_task = {k: metrics.pop(k) for k in ("task_cls_sum", "task_rows", "task_correct") if k in metrics}
        metrics = {k: float(v) for k, v in metrics.items()}
        # A loss over no rows is undefined: left out of the step's record, never logged as 0.
        for count, means in (("cls_rows", ("cls_loss", "cls_accuracy")), ("sft_tokens", ("sft_loss",))):
            if metrics[count] == 0:
                for k in means:
                    metrics.pop(k)
        if per_task:   # a task with no row this step has no loss this step (never a NaN or a 0)
            for name, total, n, c in zip(task_names, per_task["task_cls_sum"], per_task["task_rows"],
                                     per_task["task_correct"]):
                metrics[f"cls_rows/{name}"] = float(n)
                if n:
                    metrics[f"cls_loss/{name}"], metrics[f"cls_accuracy/{name}"] = float(total / n), float(c / n)
        # A finite loss with non-finite gradients or parameters would still poison the state.
        if not all(np.isfinite(metrics[k]) for k in ("loss", "grad_norm", "param_norm")):
            mngr.wait_until_finished()
            raise NonFiniteLoss(f"non-finite training at step {step}: loss={metrics['loss']} (cls_loss="
                                f"{metrics.get('cls_loss')}, sft_loss={metrics.get('sft_loss')}), grad_norm="
                                f"{metrics['grad_norm']}, param_norm={metrics['param_norm']}. Stopped without "
                                f"saving; the last good checkpoint is step {mngr.latest_step()} in {mngr.directory}")
        return {**metrics, **host}

    eval_before = evaluate(start) if evaluator and start == 0 and loop.eval_before else None
    end = loop.steps if not loop.run_steps else min(loop.steps, start + loop.run_steps)
    jitted = None
    pending = None                      # (step, metrics on device, host stats) checked one step late
    last_metrics: dict[str, Any] = {}
    status = "finished"
    bar = tqdm(total=loop.steps, initial=start, disable=jax.process_index() != 0, desc="train")
    t_last, tokens_since = time.perf_counter(), 0
    try:
        with jax.set_mesh(mesh), _Signals() as signals:
            for step in range(start, end):
                host_batch = next(data_iter)
                batch = global_batch(host_batch, mesh, rules)
                if jitted is None:
                    jitted = jit_train_step(step_fn, state, mesh, host_batch, rules, frozen)
                state, metrics = jitted(state, batch) if frozen is None else jitted(state, batch, frozen)
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
                eval_now = evaluator and loop.eval_every and done % loop.eval_every == 0
                save_now = done % loop.checkpoint_every == 0 or done == end or signals.received
                if done % loop.log_every == 0 or eval_now or save_now:
                    last_metrics = check(pending)
                    pending = None
                    now = time.perf_counter()
                    last_metrics["tokens_per_s"] = tokens_since / (now - t_last)
                    t_last, tokens_since = now, 0
                    writer.write(done, {f"train/{k}": v for k, v in last_metrics.items()})
                    bar.set_postfix(loss=f"{last_metrics['loss']:.4f}", tok_s=f"{last_metrics['tokens_per_s']:.0f}")
                eval_metrics = evaluate(done).flat if eval_now else None
                if save_now:
                    if loop.best_metric and eval_metrics is None and evaluator:
                        eval_metrics = evaluate(done).flat
                    save(done, eval_metrics)
                if signals.received:
                    status = "preempted"
                    log.warning("%s: saved step %d and stopped; run the same command to resume",
                                signals.received[0], done)
                    break
            if pending is not None:
                last_metrics = check(pending)
        bar.close()
        final_step = int(jax.device_get(state.step))
        if status == "finished" and final_step < loop.steps:
            status = "paused"
        eval_after = None
        if status == "finished" and evaluator:
            # Evaluated already when the last step was saved (best_metric), else now; either way with a report.
            with jax.set_mesh(mesh):
                eval_after = (last_eval[0] if last_eval and last_eval[0].step == final_step
                              else evaluate(final_step))
    finally:
        bar.close()
        mngr.wait_until_finished()
        checkpoints.seal_completed(mngr)
        mngr.close()
        writer.close()
    return RunResult(final_step, status, last_metrics, eval_before, eval_after, state,
                     jitted._cache_size() if jitted is not None else 0)
