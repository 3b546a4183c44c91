"""A training run, from a config: what the `train` command runs, and what `elicit` runs for each of its
training stages (no command imports another: both call this)."""
from __future__ import annotations

import json
from pathlib import Path

import jax

from monitor_jax import assemble, lease
from monitor_jax.config import changed_keys, validate
from monitor_jax.train.step import model_params
from monitor_jax.train.trainer import MetricsWriter, RunResult, train_loop


def train_run(c) -> RunResult:
    """Train (or resume, from the work directory's newest intact checkpoint) the run `c` describes."""
    validate(c, jax.device_count())
    # One writer per work directory: taken before anything is written there, released however this ends.
    with lease.hold(c.workdir, "train", "--config.workdir"):
        return _train(c)


def _train(c) -> RunResult:
    rt = assemble.runtime(c)
    optimizer = assemble.optimizer(c)
    state = assemble.train_state(rt, optimizer)
    data_iter = assemble.data_iterator(assemble.train_data(rt.config, rt.tokenizer, rt.task))
    evaluator = assemble.evaluator(rt) if c.eval.tasks else None
    mngr = assemble.checkpoint_manager(c)
    start, state = assemble.resume(rt, mngr, state, data_iter)
    if start == 0 and jax.process_index() == 0:
        Path(c.workdir).mkdir(parents=True, exist_ok=True)
        (Path(c.workdir) / "config.json").write_text(c.to_json_best_effort(indent=2))
    elif start > 0:
        record_changes(c, start)
    result = train_loop(state, start, assemble.train_step(rt, optimizer), data_iter, rt.mesh, rt.rules, mngr,
                        lambda s: assemble.save_args(rt, s, data_iter), assemble.loop_config(c),
                        MetricsWriter(c.workdir), assemble.task_names(c), evaluator,
                        report_dir=Path(c.workdir) / "eval", frozen=rt.frozen)
    if result.status == "finished" and c.train.export_hf:
        assemble.export(rt, model_params(result.state.params, rt.frozen), c.train.export_hf)
    return result


# Settings that say how a process runs, not what it computes: a resume may change them without a note.
RUN_ONLY = ("train.run_steps",)


def record_changes(c, start: int) -> list[str]:
    """A resumed run whose settings changed since the last segment: the changed keys are printed and appended
    to WORKDIR/config_changes.jsonl with the step they apply from; config.json stays the config the run
    started with, so the run directory tells which settings produced which steps."""
    workdir = Path(c.workdir)
    history = workdir / "config_changes.jsonl"
    records = [json.loads(line) for line in history.read_text().splitlines()] if history.is_file() else []
    last = records[-1]["config"] if records else (json.loads((workdir / "config.json").read_text())
                                                  if (workdir / "config.json").is_file() else None)
    if last is None:
        return []
    now = json.loads(c.to_json_best_effort())
    keys = [k for k in changed_keys(last, now) if k not in RUN_ONLY]
    if keys and jax.process_index() == 0:
        print(f"train: resuming {workdir} at step {start} with changed settings: {', '.join(keys)} (recorded in "
              f"{history})", flush=True)
        with open(history, "a") as f:
            f.write(json.dumps(dict(step=start, changed=keys, config=now)) + "\n")
    return keys
