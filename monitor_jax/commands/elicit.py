"""`elicit`: unsupervised elicitation, stage by stage; each stage's output is a file under WORKDIR/elicit/.

The stages, what each reads and writes: monitor_jax/studies/elicitation/pipeline.py. A rerun skips a stage only
when the settings it declares (the tasks they name included) and what its input stages produced are unchanged
(stages.json keeps each finished stage's fingerprint), and redoes the others and every stage after them: a
killed training run resumes from its checkpoints, one trained from inputs that have since changed is
replaced. `--stage=NAME` reruns that stage alone, replacing its outputs, once the stages it reads are done.

This module parses the flags and hands the stages the assembled operations they use.
"""
from __future__ import annotations

from pathlib import Path

import jax

from monitor_jax import assemble, lease
from monitor_jax.commands.streaming import RowWriter
from monitor_jax.config import base_config, set_key, source_specs, validate, validate_elicit
from monitor_jax.data.sources import reads_data_root
from monitor_jax.errors import EXIT_OK, EXIT_PREEMPTED, ConfigError
from monitor_jax.eval.report import write_report
from monitor_jax.runs import train_run
from monitor_jax.studies import pipeline as stages
from monitor_jax.studies.elicitation import pipeline as elicitation

STAGES = elicitation.NAMES


class Assembled:
    """The operations the elicitation stages use (elicitation.Operations), over the assembly. Each builds the
    full config of its run from the stage's view: the view's keys, every other key at its default."""

    def __init__(self, c):
        self.workdir = c.workdir
        self.base = base_config()
        self.tokenizer_dir = ""

    def config(self, view, workdir: Path, **changes):
        s = stages.fill(view, self.base)
        if not self.tokenizer_dir:   # every run shares the tokenizer files (the demo's is built once, here)
            s.workdir = self.workdir
            self.tokenizer_dir = assemble.tokenizer(s)[1]
        s.workdir = str(workdir)
        s.model.tokenizer = self.tokenizer_dir
        for key, value in changes.items():
            set_key(s, key, value)
        if s.data_root and not any(reads_data_root(spec) for _, spec in source_specs(s)):
            s.data_root = ""     # this run reads no research source: data_root is nothing to it
        return s

    def runtime(self, view, workdir: Path):
        return assemble.runtime(self.config(view, workdir), "")

    def scorer(self, rt):
        return assemble.scorer(rt)

    def sampler(self, rt, writers):
        return assemble.sampler(rt, writers)

    def train(self, view, workdir: Path, **changes) -> str:
        return train_run(self.config(view, workdir, **changes)).status

    def evaluate(self, view, workdir: Path, items: list, out: Path, title: str) -> None:
        s = self.config(view, workdir, **{"eval.tasks": items})
        validate(s, jax.device_count(), training=False)
        rt = assemble.runtime(s, "")
        evaluator = assemble.evaluator(rt)
        with jax.set_mesh(rt.mesh):
            result = evaluator.run(rt.params, step=rt.step or 0)
        write_report(result, out, title=title, source=rt.description)

    def row_writer(self, path: Path) -> RowWriter:
        return RowWriter(str(path))


def run(config, flags=None) -> int:
    validate(config, jax.device_count(), training=False)
    validate_elicit(config)
    stage = getattr(flags, "stage", "") if flags else ""
    if stage and stage not in STAGES:
        raise ConfigError(f"--stage={stage!r}; choose one of {STAGES}")
    tables: dict[str, assemble.Tasks] = {}

    def task(c, name: str):
        """A task of `c` (the config or a stage's view), from a task table built once per `tasks` list."""
        key = repr(c.tasks)
        if key not in tables:
            tables[key] = assemble.Tasks(c)
        return tables[key](name)

    # One writer per work directory (the stages' training runs hold their own run directories' leases).
    with lease.hold(config.workdir, "elicit", "--config.workdir"):
        elicitation.check(config, task)
        pipeline = elicitation.pipeline(Path(config.workdir) / "elicit", task)
        status = pipeline.run(config, Assembled(config), only=stage)
    if status != "finished":
        return EXIT_PREEMPTED if status == "preempted" else EXIT_OK
    if jax.process_index() == 0 and pipeline.done(config, "report"):
        print((pipeline.directory / "report.md").read_text())
        print(f"elicitation report written to {pipeline.directory}")
    return EXIT_OK
