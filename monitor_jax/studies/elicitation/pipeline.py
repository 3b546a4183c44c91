"""The elicitation pipeline: its stages, what each reads and writes, and the functions that run them.

Each stage's output is a file under WORKDIR/elicit/ (studies/pipeline.py runs the table, keeps fingerprints
and hands each stage only the config keys it declares):

    predict          predictions.jsonl: the starting model reasons on each row of elicit.source (its label
                     fields removed as it is read) under elicit.thinking_task, and is scored after the marker
    pseudo_label     pseudo_labels.jsonl (the kept rows with their pseudo-labels, for elicit.task) and
                     pseudo_labels.json (the class balance, the confidence threshold)
    train            train/: an ordinary run (model, data, loss, optim, train) with data.classification =
                     elicit.task over pseudo_labels.jsonl
    supervised       supervised_labels.jsonl and supervised/: the same run on the same rows with their true
                     labels, when every kept row has one (elicit.supervised); else supervised.json says why not
    eval_zero_shot   eval/zero_shot/: the starting model on every eval.tasks item (single-token and thinking)
    eval_elicited    eval/elicited/: train/'s final parameters on the single-token items
    eval_supervised  eval/supervised/: supervised/'s, likewise
    report           report.md, report.json: per single-token eval set, zero-shot single-token and thinking (the
                     thinking item over the same rows and domain), elicited and supervised AUROC

Only `supervised` and `report` read the source's labels. The stages get the heavy operations (the model's
runtime, a training run, an evaluation) from the command as an `Operations` object: this layer cannot
import the assembly.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Protocol, Sequence

import jax
import numpy as np
from tqdm import tqdm

from monitor_jax.data.sources import describe, open_source
from monitor_jax.data.tasks import TaskError
from monitor_jax.errors import ConfigError, DataError
from monitor_jax.eval import modes
from monitor_jax.eval.evaluator import item_names
from monitor_jax.eval.metrics import point_metrics
from monitor_jax.eval.thinking import ThinkingEncoder
from monitor_jax.parallel.multihost import sync
from monitor_jax.studies.elicitation import compare
from monitor_jax.studies.elicitation.predict import predict, unlabeled
from monitor_jax.studies.elicitation.pseudo_labels import labelled_rows, pseudo_labels
from monitor_jax.studies.pipeline import Context, Pipeline, Stage, keys, say


class Operations(Protocol):
    """What the command hands the stages. Each takes the stage's config view; the keys a view lacks are at
    their defaults in the run it builds (studies/pipeline.py: fill)."""

    def runtime(self, view, workdir: Path) -> Any:
        """The model a stage starts from: `workdir`'s latest checkpoint, else the base model (assemble.Runtime)."""

    def scorer(self, rt) -> Any: ...

    def sampler(self, rt, writers: Sequence) -> Any: ...

    def train(self, view, workdir: Path, **changes) -> str:
        """A training run in `workdir` (resumed from its checkpoints); its status ("finished", "preempted")."""

    def evaluate(self, view, workdir: Path, items: list, out: Path, title: str) -> None:
        """`workdir`'s latest parameters (else the base model) on eval items `items`; the report in `out`."""

    def row_writer(self, path: Path) -> Any:
        """A JSONL writer that renames PATH.partial into place once every row is written."""


# ------------------------------------------------------------------ eval modes
def reads_one_token(item) -> bool:
    """The item's mode scores the monitor's answer to the prompt itself (no writing first): what a single-token
    monitor trained on pseudo-labels is evaluated on."""
    return not modes.of(item).writes_first


def reasons_first(item) -> bool:
    """The item's mode has the monitor write before it is scored on its own answer (thinking, not a judge)."""
    mode = modes.of(item)
    return mode.writes_first and not mode.judged


def single_items(items) -> list:
    return [item for item in items if reads_one_token(item)]


# ------------------------------------------------------------------ reading what earlier stages wrote
def source_rows(ctx: Context) -> tuple[list[dict], list[str]]:
    """elicit.source's rows with the label fields of both tasks removed, and where each comes from."""
    c = ctx.config
    try:
        source = open_source(c.elicit.source, c.data_root)
    except DataError as e:
        raise DataError(f"elicit.source: {e}") from None
    n = len(source) if not c.elicit.max_rows else min(len(source), c.elicit.max_rows)
    if n == 0:
        raise DataError(f"elicit.source {dict(c.elicit.source)} has no rows: nothing to pseudo-label")
    fields = (ctx.task(c.elicit.thinking_task).label_field, ctx.task(c.elicit.task).label_field)
    return [unlabeled(source[i], fields) for i in range(n)], [describe(source, i) for i in range(n)]


def predictions(directory: Path) -> list[dict]:
    return [json.loads(line) for line in open(directory / "predictions.jsonl")]


def kept(directory: Path) -> list[int]:
    return json.loads((directory / "pseudo_labels.json").read_text())["kept_indices"]


def supervised_available(directory: Path) -> bool:
    info = directory / "supervised.json"
    return info.is_file() and json.loads(info.read_text())["available"]


# ------------------------------------------------------------------ the stages
def run_predict(ctx: Context) -> None:
    c, d = ctx.config, ctx.directory
    rows, wheres = source_rows(ctx)   # an empty source fails here, before any model is built
    rt = ctx.ops.runtime(c, d)
    if rt.step is not None:
        raise ConfigError(f"elicit: {d} holds checkpoints; the predictions come from the starting model")
    scorer = ctx.ops.scorer(rt)
    encoder = ThinkingEncoder(ctx.task(c.elicit.thinking_task), rt.tokenizer, scorer.max_length,
                              c.elicit.max_thinking_tokens)
    sampler = ctx.ops.sampler(rt, [encoder])
    path = d / "predictions.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with ctx.ops.row_writer(path) as writer, jax.set_mesh(rt.mesh), \
            tqdm(total=2 * len(rows), desc="elicit: predict", unit="row", disable=jax.process_index() != 0) as bar:
        for p in predict(sampler, scorer, rt.params, encoder, rows, wheres, progress=bar.update):
            writer.write(p)
        writer.finish(len(rows), f"elicit predictions of {dict(c.elicit.source)}")


def run_pseudo_label(ctx: Context) -> None:
    c, d = ctx.config, ctx.directory
    preds = predictions(d)
    pl = pseudo_labels(np.array([p["log_odds"] for p in preds]), c.elicit.keep_quantile)
    rows, _ = source_rows(ctx)
    if len(rows) != len(preds):
        raise DataError(f"elicit: {len(preds)} predictions for {len(rows)} source rows; rerun --stage=predict")
    labelled = labelled_rows(rows, pl.label, pl.keep, ctx.task(c.elicit.task))
    with ctx.ops.row_writer(d / "pseudo_labels.jsonl") as writer:
        for row in labelled:
            writer.write(row)
        writer.finish(len(labelled), "elicit pseudo-labels")
    summary = dict(pl.summary(), keep_quantile=c.elicit.keep_quantile,
                   reached_marker=sum(p["reached_marker"] for p in preds),
                   cut_by_budget=sum(p["cut_by_budget"] for p in preds),
                   kept_indices=[int(i) for i in np.flatnonzero(pl.keep)])
    if jax.process_index() == 0:
        (d / "pseudo_labels.json").write_text(json.dumps(summary, indent=2))
    say(f"elicit: pseudo-labels: {summary['kept']} of {summary['rows']} rows kept, {summary['positive']} "
        f"positive, {summary['negative']} negative")


def _train(ctx: Context, name: str, labels_file: Path) -> str:
    """An ordinary training run in elicit/NAME/ on `labels_file`: resumed when it was started from the same
    inputs, replaced when from others (or by --stage): a run directory only ever holds one run's checkpoints."""
    workdir = ctx.directory / name
    marker = workdir / "elicit_fingerprint"
    # Every process decides from the same files (sync before anyone writes), then process 0 acts.
    started = marker.read_text() if marker.is_file() else None
    replace = workdir.exists() and any(workdir.iterdir()) and (started != ctx.fingerprint or ctx.rerun)
    sync(f"elicit {name} checked")
    if replace:
        say(f"elicit: replacing {workdir}: " + ("--stage reruns it" if started == ctx.fingerprint else
                                                "it was trained from other inputs (the config or an earlier "
                                                "stage's output changed)"))
    if jax.process_index() == 0:
        if replace:
            shutil.rmtree(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        marker.write_text(ctx.fingerprint)
    sync(f"elicit {name} ready")
    return ctx.ops.train(ctx.config, workdir, **{
        "data.classification": [{"task": ctx.config.elicit.task, "source": {"kind": "jsonl",
                                                                              "path": str(labels_file.resolve())}}],
        "eval.tasks": [], "eval.every": 0, "train.best_metric": "", "train.export_hf": ""})


def run_train(ctx: Context) -> str:
    return _train(ctx, "train", ctx.directory / "pseudo_labels.jsonl")


def _no_supervised_run(info: Path, reason: str) -> str:
    say(f"elicit: no supervised run: {reason}")
    if jax.process_index() == 0:
        info.write_text(json.dumps(dict(available=False, reason=reason)))
    return "finished"


def run_supervised(ctx: Context) -> str:
    """Train on the kept rows' true labels; when the source lacks them, supervised.json says so."""
    c, d = ctx.config, ctx.directory
    info = d / "supervised.json"
    if not c.elicit.supervised:
        return _no_supervised_run(info, "elicit.supervised is off")
    source = open_source(c.elicit.source, c.data_root)
    task = ctx.task(c.elicit.task)
    rows = []
    for i in kept(d):
        row = source[i]
        try:   # checked here, so a source without labels skips this run instead of failing in training
            task.label_of(row, describe(source, i))
        except TaskError as e:
            return _no_supervised_run(info, f"the source has no usable label for every kept row ({e})")
        rows.append(dict(row))
    path = d / "supervised_labels.jsonl"
    with ctx.ops.row_writer(path) as writer:
        for row in rows:
            writer.write(row)
        writer.finish(len(rows), "elicit supervised labels")
    if jax.process_index() == 0:
        info.write_text(json.dumps(dict(available=True, rows=len(rows))))
    return _train(ctx, "supervised", path)


def run_eval_zero_shot(ctx: Context) -> None:
    # elicit/ itself holds no checkpoints: its "latest" is the starting model.
    ctx.ops.evaluate(ctx.config, ctx.directory, list(ctx.config.eval.tasks), ctx.directory / "eval" / "zero_shot",
                     "starting model (zero-shot)")


def run_eval_elicited(ctx: Context) -> None:
    ctx.ops.evaluate(ctx.config, ctx.directory / "train", single_items(ctx.config.eval.tasks),
                     ctx.directory / "eval" / "elicited", "elicited (trained on pseudo-labels)")


def run_eval_supervised(ctx: Context) -> None:
    if supervised_available(ctx.directory):
        ctx.ops.evaluate(ctx.config, ctx.directory / "supervised", single_items(ctx.config.eval.tasks),
                         ctx.directory / "eval" / "supervised", "supervised (same rows, true labels)")


def pairs(ctx: Context) -> list[tuple[str, str | None]]:
    """Each single-token eval set and the thinking set over the same source and domain (or None)."""
    items = list(ctx.config.eval.tasks)
    names = item_names(items)
    out = []
    for name, item in zip(names, items):
        if not reads_one_token(item):
            continue
        domain = ctx.task(item["task"]).domain
        match = [n for n, other in zip(names, items)
                 if reasons_first(other) and dict(other["source"]) == dict(item["source"])
                 and ctx.task(other["task"]).domain == domain]
        out.append((name, match[0] if match else None))
    return out


def _label_check(ctx: Context) -> dict:
    """Pseudo-label accuracy and the thinking log-odds' AUROC against the source's labels, when every row has
    one (the source is read again here: the stages before never saw these labels)."""
    c, d = ctx.config, ctx.directory
    source, preds, task = open_source(c.elicit.source, c.data_root), predictions(d), ctx.task(c.elicit.task)
    try:
        truth = np.array([int(task.label_of(source[p["index"]], describe(source, p["index"]))) for p in preds])
    except TaskError:
        return dict(accuracy=None, auroc=None)
    log_odds = np.array([p["log_odds"] for p in preds])
    kept_rows = np.array(kept(d), dtype=int)
    accuracy = float(np.mean((log_odds[kept_rows] > 0) == (truth[kept_rows] == 1)))
    auroc = (float(point_metrics(truth, log_odds, 1 / (1 + np.exp(-log_odds)))["auroc"])
             if 0 < truth.sum() < truth.size else None)
    return dict(accuracy=accuracy, auroc=auroc)


def run_report(ctx: Context) -> None:
    d = ctx.directory
    read = lambda name: json.loads((d / "eval" / name / "report.json").read_text())  # noqa: E731
    supervised = read("supervised") if supervised_available(d) else None
    rows = compare.comparison(pairs(ctx), read("zero_shot"), read("elicited"), supervised)
    pseudo = json.loads((d / "pseudo_labels.json").read_text())
    pseudo.pop("kept_indices")
    pseudo.update(_label_check(ctx))
    notes = [] if supervised else [f"No supervised run: {json.loads((d / 'supervised.json').read_text())}"]
    if jax.process_index() == 0:
        compare.write(d, rows, pseudo, notes)


# ------------------------------------------------------------------ the table
# The keys each stage reads: a section name stands for every key in it; the tasks these keys name (elicit.task,
# eval.tasks[i].task, ...) count with their full definitions.
SOURCE = ("elicit.source", "elicit.max_rows", "elicit.thinking_task", "elicit.task", "data_root")
STARTING_MODEL = ("model", "mesh", "seed")
# `lora`: the trained runs are LoRA runs when lora.rank > 0, and their evaluations restore the adapters (a
# stage that did not declare it would train a full model in a LoRA config: fill() gives undeclared keys their
# defaults). The starting model's predictions do not depend on it (zero-initialised adapters change nothing).
TRAINING = keys(STARTING_MODEL, ("lora", "data", "loss", "optim", "train", "elicit.task", "data_root"))
EVALUATION = keys(STARTING_MODEL, ("lora", "eval", "data_root"))

STAGES = (
    Stage("predict", run_predict, outputs=("predictions.jsonl",),
          keys=keys(SOURCE, STARTING_MODEL, ("elicit.max_thinking_tokens", "eval.batch_size", "eval.buckets",
                                             "eval.pack_max"))),
    Stage("pseudo_label", run_pseudo_label, inputs=("predict",),
          outputs=("pseudo_labels.jsonl", "pseudo_labels.json"), keys=keys(SOURCE, ("elicit.keep_quantile",))),
    # A training run has no output file its readers hash: its fingerprint stands for its checkpoints.
    Stage("train", run_train, inputs=("pseudo_label",), keys=TRAINING),
    Stage("supervised", run_supervised, inputs=("pseudo_label",),
          keys=keys(TRAINING, SOURCE, ("elicit.supervised",))),
    Stage("eval_zero_shot", run_eval_zero_shot, outputs=("eval/zero_shot/report.json",), keys=EVALUATION),
    Stage("eval_elicited", run_eval_elicited, inputs=("train",), outputs=("eval/elicited/report.json",),
          keys=EVALUATION),
    Stage("eval_supervised", run_eval_supervised, inputs=("supervised",),
          outputs=("eval/supervised/report.json",), keys=EVALUATION),
    Stage("report", run_report,
          inputs=("predict", "pseudo_label", "supervised", "eval_zero_shot", "eval_elicited", "eval_supervised"),
          outputs=("report.json", "report.md"), keys=("eval.tasks", "elicit.source", "elicit.task", "data_root")),
)
NAMES = tuple(s.name for s in STAGES)


def pipeline(directory: str | Path, resolve) -> Pipeline:
    """The elicitation pipeline over `directory` (WORKDIR/elicit); `resolve(config, name)` gives a task."""
    return Pipeline(STAGES, directory, resolve, label="elicit")


def check(c, resolve) -> None:
    """What the stages need of the config, checked before any runs: a thinking task with an answer marker, and
    single-token eval items to compare the monitors on."""
    if not getattr(resolve(c, c.elicit.thinking_task), "answer_marker", ""):
        raise TaskError(f"elicit.thinking_task={c.elicit.thinking_task!r} has no answer_marker, so it cannot "
                        f"reason before its answer (the marker, e.g. 'Answer:', is where its label is read)")
    if not single_items(c.eval.tasks):
        raise ConfigError("elicit: eval.tasks has no single-token item; the elicited and supervised monitors "
                          "are compared on single-token eval sets")
