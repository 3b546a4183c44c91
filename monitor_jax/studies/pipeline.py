"""Pipelines of stages whose outputs are files: a table of stages, each declaring what it reads.

A `Stage` names the stages whose outputs it reads (`inputs`), the files it writes that its readers depend on
(`outputs`, relative to the pipeline's directory), the config keys it reads (`keys`: dotted keys; a section
name such as "model" or "optim" stands for the whole section) and the function that runs it.

    Stage("pseudo_label", pseudo_label, inputs=("predict",), outputs=("pseudo_labels.jsonl",),
          keys=("elicit.source", "elicit.keep_quantile", "elicit.task", "data_root"))

A stage sees only what it declares: its function gets a config *view* holding the declared keys alone (and,
under `tasks`, the config's own task definitions those keys name); reading any other key is an error naming
the stage and the key, never a default. So a key a stage reads is always in its fingerprint:

    fingerprint = hash(the declared keys' values, the full definitions of the tasks they name (a registered
                       task's fields, or the config's own task), what each input stage produced (its output
                       files' digests; for a stage without output files, its own recorded fingerprint))

`stages.json` in the pipeline's directory keeps each finished stage's fingerprint and its output files'
digests. A stage is done when both still match; a rerun skips it and redoes every other stage, so a changed
setting, task or upstream output redoes that stage and those that read it, nothing before. `plan()` says
which stages a run would run, without running any.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import jax
import ml_collections

from monitor_jax.errors import ConfigError
from monitor_jax.model.gguf import file_sha256
from monitor_jax.parallel.multihost import sync
from monitor_jax.settings import lookup

# A config value under one of these names (at any depth: `elicit.task`, `eval.tasks[i].judge_task`,
# `data.instruction.task`) names a task, whose definition then counts as a setting of the stage.
TASK_FIELDS = ("task", "thinking_task", "judge_task")
TASKS_KEY = "tasks"     # where a config writes its own task definitions (a list of specs with a "name")
DONE = ("finished", None)   # what a stage's function returns when it completed


def say(line: str) -> None:
    if jax.process_index() == 0:
        print(line, flush=True)


# ------------------------------------------------------------------ fingerprints
def fingerprint(*parts: Any) -> str:
    """A stable hash of JSON-able parts (settings, upstream fingerprints, file digests)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_digest(path: str | Path) -> str:
    return file_sha256(path)[:16]


def plain(value: Any) -> Any:
    """A config value as JSON-able Python: ConfigDicts and mappings to dicts, tuples to lists."""
    if isinstance(value, ml_collections.FieldReference):
        value = value.get()
    if isinstance(value, ml_collections.ConfigDict) or hasattr(value, "items"):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def task_names(value: Any, fields: Sequence[str] = TASK_FIELDS) -> list[str]:
    """The task names a (plain) config value holds under `fields`, at any depth, in order, once each."""
    out: list[str] = []

    def walk(v: Any, name: str) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                walk(x, k.rsplit(".", 1)[-1])     # a dotted key (`elicit.task`) is named by its last part
        elif isinstance(v, list):
            for x in v:
                walk(x, name)
        elif name in fields and isinstance(v, str) and v and v not in out:
            out.append(v)

    walk(plain(value), "")
    return out


def task_definition(task: Any) -> dict:
    """A resolved task (a frozen dataclass of plain values) as JSON: its kind and every field."""
    return {"kind": type(task).__name__, **plain(dataclasses.asdict(task))}


class Record:
    """`directory/stages.json`: {stage: {fingerprint, outputs: {file: digest}}} of the finished stages,
    written by process 0."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.path = self.directory / "stages.json"

    def read(self) -> dict[str, dict]:
        record = json.loads(self.path.read_text()) if self.path.is_file() else {}
        return {k: v for k, v in record.items() if isinstance(v, dict)}   # an older layout: nothing is done

    def fingerprint(self, name: str) -> str | None:
        return self.read().get(name, {}).get("fingerprint")

    def _write(self, record: dict[str, dict], what: str) -> None:
        if jax.process_index() == 0:
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
            os.replace(tmp, self.path)
        sync(what)

    def finish(self, name: str, fp: str, outputs: dict[str, str | None]) -> None:
        self._write({**self.read(), name: dict(fingerprint=fp, outputs=outputs)}, f"stage {name} done")

    def forget(self, name: str) -> None:
        record = self.read()
        record.pop(name, None)
        self._write(record, f"stage {name} forgotten")


# ------------------------------------------------------------------ the view a stage sees
class UndeclaredKey(KeyError):
    """A stage read a config key it does not declare (a bug in its table entry: add the key to it)."""

    def __str__(self) -> str:
        return self.args[0]


class View(ml_collections.ConfigDict):
    """A node of a stage's config view that holds only some of its keys: reading another one is an
    `UndeclaredKey` error naming the stage and the key (attribute access: an AttributeError saying the same).
    Whole sections the stage declares are plain ConfigDicts below it."""

    def __init__(self, stage: str = "", prefix: str = ""):
        super().__init__()
        object.__setattr__(self, "_stage", stage)
        object.__setattr__(self, "_prefix", prefix)

    def _undeclared(self, key: str) -> UndeclaredKey:
        full = f"{self._prefix}.{key}" if self._prefix else key
        return UndeclaredKey(f"stage {self._stage!r} reads the config key {full}, which it does not declare: add "
                             f"it to the stage's keys in its pipeline's table of stages")

    def __getitem__(self, key):
        if isinstance(key, str) and "." not in key and key not in self._fields and not key.startswith("__"):
            raise self._undeclared(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        if isinstance(key, str) and key not in self._fields:
            raise self._undeclared(key)
        return super().get(key, default)


def fill(view: ml_collections.ConfigDict, base: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A full config: `base` (every key at its default) with the view's values. What a stage hands to code
    that reads whole configs (a training run, an evaluation): the keys it does not declare are defaults, so
    they cannot differ between two runs with the same fingerprint."""
    out = base.copy_and_resolve_references()

    def put(node: ml_collections.ConfigDict, target: ml_collections.ConfigDict) -> None:
        for key in node.keys():
            value = node[key]
            if isinstance(value, View):
                put(value, target[key])
            else:
                with target.ignore_type():
                    target[key] = copy.deepcopy(value)

    put(view, out)
    return out


# ------------------------------------------------------------------ stages
@dataclasses.dataclass(frozen=True)
class Stage:
    """One unit of work: `run(context)` writes `outputs` (files under the pipeline's directory) from the
    outputs of `inputs` (earlier stages) and the config keys `keys`. It returns None or "finished" when
    done, anything else (e.g. "preempted") to stop the pipeline there."""
    name: str
    run: Callable[["Context"], str | None]
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()
    doc: str = ""


@dataclasses.dataclass
class Context:
    """What a stage's function gets: its view of the config, the pipeline's directory, the operations the
    command injected, the stage's fingerprint, and whether it was asked to run again (`--stage`)."""
    stage: Stage
    config: ml_collections.ConfigDict     # the view: the stage's declared keys only
    directory: Path
    ops: Any
    fingerprint: str
    rerun: bool
    resolve: Callable[[ml_collections.ConfigDict, str], Any]

    def task(self, name: str):
        """A task the stage's keys name (its definition is part of the fingerprint)."""
        return self.resolve(self.config, name)


def keys(*groups: Iterable[str]) -> tuple[str, ...]:
    """Several groups of declared keys as one, each key once, in order."""
    out: list[str] = []
    for group in groups:
        out += [k for k in group if k not in out]
    return tuple(out)


class Pipeline:
    """The stages, in an order where each comes after its inputs, over one directory.

    `resolve(config, name)` gives the task a name stands for (the command's task table); `label` starts
    every line printed and names the command in errors.
    """

    def __init__(self, stages: Sequence[Stage], directory: str | Path,
                 resolve: Callable[[ml_collections.ConfigDict, str], Any], label: str = "pipeline"):
        self.stages, self.directory, self.resolve, self.label = tuple(stages), Path(directory), resolve, label
        self.by_name = {s.name: s for s in self.stages}
        self.record = Record(self.directory)
        seen: set[str] = set()
        for s in self.stages:
            if s.name in seen:
                raise ValueError(f"two stages are named {s.name!r}")
            late = [i for i in s.inputs if i not in seen]
            if late:
                raise ValueError(f"stage {s.name!r} reads {late}, which are not stages before it")
            nested = [(a, b) for a in s.keys for b in s.keys if a != b and b.startswith(a + ".")]
            if nested or len(set(s.keys)) != len(s.keys):
                raise ValueError(f"stage {s.name!r} declares a key twice or a key and its section: {nested}")
            seen.add(s.name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.stages)

    def downstream(self, name: str) -> list[str]:
        """The stages that read `name`'s outputs, directly or through others, in order."""
        out = [name]
        for s in self.stages:
            if any(i in out for i in s.inputs):
                out.append(s.name)
        return out[1:]

    # -------------------------------------------------------------- what a stage sees and computes from
    def _task_names(self, config: ml_collections.ConfigDict, stage: Stage) -> list[str]:
        return task_names({k: lookup(config, k) for k in stage.keys})

    def view(self, config: ml_collections.ConfigDict, stage: Stage) -> ml_collections.ConfigDict:
        """The config as `stage` sees it: its declared keys, plus (under `tasks`) the config's own definitions
        of the tasks they name; locked, and any other key is an error."""
        root = View(stage.name)
        for key in stage.keys:
            *parents, last = key.split(".")
            node = root
            for i, part in enumerate(parents):
                if part not in node:
                    node[part] = View(stage.name, ".".join(parents[:i + 1]))
                node = node[part]
            try:
                value = lookup(config, key)
            except (KeyError, AttributeError):
                raise ValueError(f"stage {stage.name!r} declares {key}, which is not a config key") from None
            node[last] = (value.copy_and_resolve_references() if isinstance(value, ml_collections.ConfigDict)
                          else copy.deepcopy(value))
        names = self._task_names(config, stage)
        with root.ignore_type():
            root[TASKS_KEY] = [copy.deepcopy(spec) for spec in config[TASKS_KEY]
                               if hasattr(spec, "get") and spec.get("name") in names]
        root.lock()
        return root

    def settings(self, config: ml_collections.ConfigDict, stage: Stage) -> dict:
        """What `stage` computes from besides its inputs' outputs: its keys' values and the full definitions
        of the tasks they name (resolved, so a registered task's fields count as well as an inline one's)."""
        values = {k: plain(lookup(config, k)) for k in stage.keys}
        view = self.view(config, stage)
        return dict(keys=values, tasks={n: task_definition(self.resolve(view, n))
                                        for n in self._task_names(config, stage)})

    def fingerprint(self, config: ml_collections.ConfigDict, name: str) -> str:
        """The stage's settings and what its input stages produced: their output files' digests, or for a
        stage without output files (a training run) its own recorded fingerprint."""
        stage = self.by_name[name]
        inputs = []
        for up in stage.inputs:
            digests = list(self._digests(up).values())
            inputs.append(digests or self.record.fingerprint(up))
        return fingerprint(self.settings(config, stage), inputs)

    def _digests(self, name: str) -> dict[str, str | None]:
        files = {f: self.directory / f for f in self.by_name[name].outputs}
        return {f: file_digest(p) if p.is_file() else None for f, p in files.items()}

    # -------------------------------------------------------------- deciding and running
    def done(self, config: ml_collections.ConfigDict, name: str) -> bool:
        """The stage finished from exactly the current settings and inputs, and its output files are the ones
        it wrote."""
        entry = self.record.read().get(name)
        return (entry is not None and entry.get("fingerprint") == self.fingerprint(config, name)
                and entry.get("outputs") == self._digests(name))

    def plan(self, config: ml_collections.ConfigDict) -> list[str]:
        """The stages a run with `config` would run (none is run): those not done, and every stage that reads
        one of them (a rerun stage may write other outputs)."""
        todo: list[str] = []
        for s in self.stages:
            if any(i in todo for i in s.inputs) or not self.done(config, s.name):
                todo.append(s.name)
        return todo

    def run(self, config: ml_collections.ConfigDict, ops: Any, only: str = "") -> str:
        """Run every stage not done (or `only` that one, again, once its inputs are done); returns "finished",
        or the status of the stage that stopped early (e.g. "preempted")."""
        if only and only not in self.by_name:
            raise ConfigError(f"--stage={only!r}; choose one of {self.names}")
        for stage in ([self.by_name[only]] if only else self.stages):
            name = stage.name
            if only:
                missing = [s for s in stage.inputs if not self.done(config, s)]
                if missing:
                    raise ConfigError(f"{self.label} --stage={name} reads the output of {missing}, not done yet; "
                                      f"run {self.label} without --stage first")
                self.record.forget(name)
            elif self.done(config, name):
                say(f"{self.label}: stage {name} done already (inputs unchanged), skipped")
                continue
            say(f"{self.label}: running stage {name}")
            fp = self.fingerprint(config, name)
            status = stage.run(Context(stage, self.view(config, stage), self.directory, ops, fp, bool(only),
                                       self.resolve))
            if status not in DONE:
                say(f"{self.label}: stage {name} {status}; run the same command again to continue")
                return status
            self.record.finish(name, fp, self._digests(name))
        return "finished"
