"""`elicit`: unsupervised elicitation, stage by stage; each stage's output is a file under WORKDIR/elicit/.

    predict          predictions.jsonl: the starting model reasons on each row of elicit.source (its label
                     fields removed as it is read) under elicit.thinking_task, and is scored after the marker
    pseudo_label     pseudo_labels.jsonl (the kept rows with their pseudo-labels, for elicit.task) and
                     pseudo_labels.json (the class balance, the confidence threshold)
    train            train/: an ordinary run (train.*, optim.*, loss.*, data.instruction and data.mixing) with
                     data.classification = elicit.task over pseudo_labels.jsonl
    supervised       supervised_labels.jsonl and supervised/: the same run on the same rows with their true
                     labels, when every kept row has one (elicit.supervised); else supervised.json says why not
    eval_zero_shot   eval/zero_shot/: the starting model on every eval.tasks item (single-token and thinking)
    eval_elicited    eval/elicited/: train/'s final parameters on the single-token items
    eval_supervised  eval/supervised/: supervised/'s, likewise
    report           report.md, report.json: per single-token eval set, zero-shot single-token and thinking (the
                     thinking item over the same rows and domain), elicited and supervised AUROC

Only `supervised` and `report` read the source's labels. A rerun skips every stage whose inputs are unchanged
(stages.json keeps each finished stage's fingerprint) and redoes the others: a killed training run resumes
from its checkpoints, one trained from inputs that have since changed is replaced. `--stage=NAME` reruns that
stage alone, replacing its outputs, once the stages it reads are done.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from monitor_jax import assemble
from monitor_jax.commands import train as train_command
from monitor_jax.commands.streaming import RowWriter
from monitor_jax.config import eval_names, set_key, validate, validate_elicit
from monitor_jax.data.pipeline import open_rows
from monitor_jax.data.sources import describe
from monitor_jax.data.tasks import TaskError
from monitor_jax.studies.elicitation import compare
from monitor_jax.studies.elicitation.predict import predict, unlabeled
from monitor_jax.studies.elicitation.pseudo_labels import labelled_rows, pseudo_labels
from monitor_jax.studies.elicitation.stages import Stages, file_digest, fingerprint
from monitor_jax.errors import EXIT_OK, EXIT_PREEMPTED, ConfigError, DataError
from monitor_jax.eval.metrics import point_metrics
from monitor_jax.eval.report import write_report
from monitor_jax.eval.thinking import ThinkingEncoder
from monitor_jax.parallel.multihost import sync



def say(line: str) -> None:
    if jax.process_index() == 0:
        print(line, flush=True)


STAGES = ("predict", "pseudo_label", "train", "supervised", "eval_zero_shot", "eval_elicited", "eval_supervised",
          "report")


class Pipeline:
    def __init__(self, c: ml_collections.ConfigDict):
        self.c, self.e = c, c.elicit
        self.dir = Path(c.workdir) / "elicit"
        self.stages = Stages(self.dir)
        self.thinking_task, self.task = assemble.task(c, self.e.thinking_task), assemble.task(c, self.e.task)
        if not getattr(self.thinking_task, "answer_marker", ""):
            raise TaskError(f"elicit.thinking_task={self.e.thinking_task!r} has no answer_marker, so it cannot "
                            f"reason before its answer (the marker, e.g. 'Answer:', is where its label is read)")
        self.items = list(c.eval.tasks)
        self.names = eval_names(c)
        if not self._single_items():
            raise ConfigError("elicit: eval.tasks has no single-token item; the elicited and supervised monitors "
                              "are compared on single-token eval sets")
        section = lambda key: json.loads(c[key].to_json_best_effort())  # noqa: E731
        base = (section("model"), c.seed)
        training = (base, {k: v for k, v in section("data").items() if k != "classification"}, section("loss"),
                    section("optim"), section("train"), self.e.task)
        evals = section("eval")
        # What each stage computes from, besides the files it reads (UPSTREAM, through their fingerprints).
        self.settings = {
            "predict": (base, dict(self.e.source), self.e.thinking_task, self.e.max_thinking_tokens, self.e.max_rows,
                        list(c.eval.buckets)),
            "pseudo_label": (self.e.keep_quantile, self.e.task), "train": training,
            "supervised": (training, self.e.supervised), "eval_zero_shot": (base, evals),
            "eval_elicited": evals, "eval_supervised": evals, "report": ()}
        self.tokenizer_dir = ""
        self.rerun = False          # --stage=NAME: the stage runs again even when done (a training run restarts)

    # ------------------------------------------------------------------ helpers
    def sub(self, workdir: Path, **changes) -> ml_collections.ConfigDict:
        """The config for one stage's run: another work directory, the same tokenizer files."""
        s = self.c.copy_and_resolve_references()
        s.workdir = str(workdir)
        if not self.tokenizer_dir:
            self.tokenizer_dir = assemble.tokenizer(self.c)[1]
        s.model.tokenizer = self.tokenizer_dir
        for key, value in changes.items():
            set_key(s, key, value)
        return s

    def source_rows(self) -> tuple[list[dict], list[str]]:
        """elicit.source's rows with the label fields of both tasks removed, and where each comes from."""
        try:
            source = open_rows(self.e.source, self.c.data_root)
        except DataError as e:
            raise DataError(f"elicit.source: {e}") from None
        n = len(source) if not self.e.max_rows else min(len(source), self.e.max_rows)
        if n == 0:
            raise DataError(f"elicit.source {dict(self.e.source)} has no rows: nothing to pseudo-label")
        fields = (self.thinking_task.label_field, self.task.label_field)
        return [unlabeled(source[i], fields) for i in range(n)], [describe(source, i) for i in range(n)]

    def predictions(self) -> list[dict]:
        return [json.loads(line) for line in open(self.dir / "predictions.jsonl")]

    def kept(self) -> list[int]:
        return json.loads((self.dir / "pseudo_labels.json").read_text())["kept_indices"]

    # ------------------------------------------------------------------ stages
    def predict(self) -> None:
        rows, wheres = self.source_rows()   # an empty source fails here, before any model is built
        loaded = assemble.params(self.sub(self.dir), "")
        if loaded.step is not None:
            raise ConfigError(f"elicit: {self.dir} holds checkpoints; the predictions come from the starting model")
        scorer = assemble.scorer(self.c, loaded.graphdef, loaded.mesh, loaded.rules, loaded.tokenizer.pad_id)
        encoder = ThinkingEncoder(self.thinking_task, loaded.tokenizer, scorer.max_length, self.e.max_thinking_tokens)
        sampler = assemble.writing_sampler(self.c, loaded, [encoder])
        path = self.dir / "predictions.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with RowWriter(str(path)) as writer, jax.set_mesh(loaded.mesh), \
                tqdm(total=2 * len(rows), desc="elicit: predict", unit="row",
                     disable=jax.process_index() != 0) as bar:
            for p in predict(sampler, scorer, loaded.params, encoder, rows, wheres, progress=bar.update):
                writer.write(p)
            writer.finish(len(rows), f"elicit predictions of {dict(self.e.source)}")

    def pseudo_label(self) -> None:
        preds = self.predictions()
        pl = pseudo_labels(np.array([p["log_odds"] for p in preds]), self.e.keep_quantile)
        rows, _ = self.source_rows()
        if len(rows) != len(preds):
            raise DataError(f"elicit: {len(preds)} predictions for {len(rows)} source rows; rerun --stage=predict")
        labelled = labelled_rows(rows, pl.label, pl.keep, self.task)
        with RowWriter(str(self.dir / "pseudo_labels.jsonl")) as writer:
            for row in labelled:
                writer.write(row)
            writer.finish(len(labelled), "elicit pseudo-labels")
        summary = dict(pl.summary(), keep_quantile=self.e.keep_quantile,
                       reached_marker=sum(p["reached_marker"] for p in preds),
                       cut_by_budget=sum(p["cut_by_budget"] for p in preds),
                       kept_indices=[int(i) for i in np.flatnonzero(pl.keep)])
        if jax.process_index() == 0:
            (self.dir / "pseudo_labels.json").write_text(json.dumps(summary, indent=2))
        say(f"elicit: pseudo-labels: {summary['kept']} of {summary['rows']} rows kept, {summary['positive']} "
            f"positive, {summary['negative']} negative")

    def _train(self, name: str, labels_file: Path) -> str:
        """An ordinary training run in elicit/NAME/ on `labels_file`: resumed when it was started from the same
        inputs, replaced when from others (its labels file is gone: that run can no longer be reproduced here)."""
        workdir = self.dir / name
        marker = workdir / "elicit_fingerprint"
        # Every process decides from the same files (sync before anyone writes), then process 0 acts.
        started = marker.read_text() if marker.is_file() else None
        replace = workdir.exists() and any(workdir.iterdir()) and (started != self.fp(name) or self.rerun)
        sync(f"elicit {name} checked")
        if replace:
            say(f"elicit: replacing {workdir}: " + ("--stage reruns it" if started == self.fp(name) else
                                                    "it was trained from other inputs (the config or an earlier "
                                                    "stage's output changed)"))
        if jax.process_index() == 0:
            if replace:
                shutil.rmtree(workdir)
            workdir.mkdir(parents=True, exist_ok=True)
            marker.write_text(self.fp(name))
        sync(f"elicit {name} ready")
        s = self.sub(workdir, **{"data.classification": [{"task": self.e.task, "source": {
            "kind": "jsonl", "path": str(labels_file.resolve())}}], "eval.tasks": [], "eval.every": 0,
            "train.best_metric": "", "train.export_hf": ""})
        result = train_command.train(s)
        return result.status

    def train(self) -> str:
        return self._train("train", self.dir / "pseudo_labels.jsonl")

    def supervised(self) -> str:
        """Train on the kept rows' true labels; when the source lacks them, supervised.json says so."""
        info = self.dir / "supervised.json"
        if not self.e.supervised:
            return self._skip(info, "elicit.supervised is off")
        source = open_rows(self.e.source, self.c.data_root)
        kept = self.kept()
        rows = []
        for i in kept:
            row = source[i]
            try:   # checked here, so a source without labels skips this run instead of failing in training
                self.task.label_of(row, describe(source, i))
            except TaskError as e:
                return self._skip(info, f"the source has no usable label for every kept row ({e})")
            rows.append(dict(row))
        path = self.dir / "supervised_labels.jsonl"
        with RowWriter(str(path)) as writer:
            for row in rows:
                writer.write(row)
            writer.finish(len(rows), "elicit supervised labels")
        if jax.process_index() == 0:
            info.write_text(json.dumps(dict(available=True, rows=len(rows))))
        return self._train("supervised", path)

    def _skip(self, info: Path, reason: str) -> str:
        say(f"elicit: no supervised run: {reason}")
        if jax.process_index() == 0:
            info.write_text(json.dumps(dict(available=False, reason=reason)))
        return "finished"

    def supervised_available(self) -> bool:
        info = self.dir / "supervised.json"
        return info.is_file() and json.loads(info.read_text())["available"]

    def _evaluate(self, out: str, checkpoint_workdir: Path, items: list, title: str) -> None:
        s = self.sub(checkpoint_workdir, **{"eval.tasks": items})
        validate(s, jax.device_count(), training=False)
        loaded = assemble.params(s, "")
        evaluator = assemble.evaluator(s, loaded.tokenizer, loaded.graphdef, loaded.mesh, loaded.cfg,
                                       check_label_mass=loaded.pretrained)
        with jax.set_mesh(loaded.mesh):
            result = evaluator.run(loaded.params, step=loaded.step or 0)
        write_report(result, self.dir / "eval" / out, title=title, source=loaded.description)

    def eval_zero_shot(self) -> None:
        # elicit/ itself holds no checkpoints: its "latest" is the starting model.
        self._evaluate("zero_shot", self.dir, self.items, "starting model (zero-shot)")

    def _single_items(self) -> list:
        return [item for item in self.items if item.get("mode", "single_token") == "single_token"]

    def eval_elicited(self) -> None:
        self._evaluate("elicited", self.dir / "train", self._single_items(), "elicited (trained on pseudo-labels)")

    def eval_supervised(self) -> None:
        if self.supervised_available():
            self._evaluate("supervised", self.dir / "supervised", self._single_items(),
                           "supervised (same rows, true labels)")

    def pairs(self) -> list[tuple[str, str | None]]:
        """Each single-token eval set and the thinking set over the same source and domain (or None)."""
        out = []
        for name, item in zip(self.names, self.items):
            if item.get("mode", "single_token") != "single_token":
                continue
            domain = assemble.task(self.c, item["task"]).domain
            match = [n for n, other in zip(self.names, self.items)
                     if other.get("mode") == "thinking" and dict(other["source"]) == dict(item["source"])
                     and assemble.task(self.c, other["task"]).domain == domain]
            out.append((name, match[0] if match else None))
        return out

    def report(self) -> None:
        read = lambda name: json.loads((self.dir / "eval" / name / "report.json").read_text())  # noqa: E731
        supervised = read("supervised") if self.supervised_available() else None
        rows = compare.comparison(self.pairs(), read("zero_shot"), read("elicited"), supervised)
        pseudo = json.loads((self.dir / "pseudo_labels.json").read_text())
        pseudo.pop("kept_indices")
        pseudo.update(self._label_check())
        notes = [] if supervised else [f"No supervised run: {json.loads((self.dir / 'supervised.json').read_text())}"]
        if jax.process_index() == 0:
            compare.write(self.dir, rows, pseudo, notes)

    def _label_check(self) -> dict:
        """Pseudo-label accuracy and the thinking log-odds' AUROC against the source's labels, when every row has
        one (the source is read again here: the stages before never saw these labels)."""
        source, preds = open_rows(self.e.source, self.c.data_root), self.predictions()
        try:
            truth = np.array([int(self.task.label_of(source[p["index"]], describe(source, p["index"])))
                              for p in preds])
        except TaskError:
            return dict(accuracy=None, auroc=None)
        log_odds = np.array([p["log_odds"] for p in preds])
        kept = np.array(self.kept(), dtype=int)
        accuracy = float(np.mean((log_odds[kept] > 0) == (truth[kept] == 1)))
        auroc = (float(point_metrics(truth, log_odds, 1 / (1 + np.exp(-log_odds)))["auroc"])
                 if 0 < truth.sum() < truth.size else None)
        return dict(accuracy=accuracy, auroc=auroc)

    # ------------------------------------------------------------------ running
    def fp(self, name: str) -> str:
        """The stage's fingerprint: its settings and what the stages it reads produced (their output files'
        digests, or for a training run its own fingerprint), so a changed upstream output redoes it."""
        inputs = []
        for up in UPSTREAM[name]:
            files = [self.dir / f for f in OUTPUTS[up]]
            inputs.append([file_digest(f) if f.is_file() else None for f in files] or self.stages.recorded(up))
        return fingerprint(self.settings[name], inputs)

    def done(self, name: str) -> bool:
        return self.stages.done(name, self.fp(name))

    def run(self, only: str = "") -> int:
        order = [only] if only else list(STAGES)
        self.rerun = bool(only)
        for name in order:
            if only:
                missing = [s for s in UPSTREAM[name] if not self.done(s)]
                if missing:
                    raise ConfigError(f"elicit --stage={name} reads the output of {missing}, not done yet; run "
                                      f"elicit without --stage first")
                self.stages.forget(name)
            elif self.done(name):
                say(f"elicit: stage {name} done already (inputs unchanged), skipped")
                continue
            say(f"elicit: running stage {name}")
            status = getattr(self, name)()
            if status not in (None, "finished"):
                say(f"elicit: stage {name} {status}; run the same command again to continue")
                return EXIT_PREEMPTED if status == "preempted" else EXIT_OK
            self.stages.finish(name, self.fp(name))
        return EXIT_OK


# The stages each stage reads (a --stage rerun needs them done), and the files a stage's readers depend on
# (none: its own fingerprint stands for what it wrote, e.g. a training run's checkpoints).
UPSTREAM = {"predict": (), "pseudo_label": ("predict",), "train": ("pseudo_label",), "supervised": ("pseudo_label",),
            "eval_zero_shot": (), "eval_elicited": ("train",), "eval_supervised": ("supervised",),
            "report": ("pseudo_label", "eval_zero_shot", "eval_elicited", "eval_supervised")}
OUTPUTS = {"predict": ("predictions.jsonl",), "pseudo_label": ("pseudo_labels.jsonl", "pseudo_labels.json"),
           "train": (), "supervised": (), "eval_zero_shot": ("eval/zero_shot/report.json",),
           "eval_elicited": ("eval/elicited/report.json",), "eval_supervised": ("eval/supervised/report.json",),
           "report": ()}


def run(config, flags=None) -> int:
    validate(config, jax.device_count(), training=False)
    validate_elicit(config)
    stage = getattr(flags, "stage", "") if flags else ""
    if stage and stage not in STAGES:
        raise ConfigError(f"--stage={stage!r}; choose one of {STAGES}")
    pipeline = Pipeline(config)
    code = pipeline.run(stage)
    if code == EXIT_OK and jax.process_index() == 0 and pipeline.done("report"):
        print((pipeline.dir / "report.md").read_text())
        print(f"elicitation report written to {pipeline.dir}")
    return code
