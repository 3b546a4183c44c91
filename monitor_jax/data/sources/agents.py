"""Agent transcripts as rows: Inspect evaluation logs, and ControlArena's tool-call trajectories.

    {"kind": "inspect", "paths": ["logs/"], "label": "eval_mode"}            # .eval and .json logs, files or folders
    {"kind": "trajectories", "paths": ["QA/"], "labels": {"honest*.jsonl": 0, "attack_*.jsonl": 1}}
    {"kind": "trajectories", "paths": "control_arena:infra"}     # the 21 the control-arena wheel ships

A row is {"id", "text" (the transcript as data/transcripts.py renders it), "label" (1: attack), "task_description"
(the main task, where the log has one), "log", "sample_id", "epoch"}. Nothing of a sample's metadata beyond the
main task and nothing of its scores reaches "text": ControlArena's `side_task_description` names what an attack is
after, and the scores are the answer.

Inspect logs are read through inspect_ai's reader (`read_eval_log_samples`, `pip install -e '.[inspect]'`),
once, when the source opens; rows are kept rendered in memory (a transcript is far smaller than its log's
events). The label comes from a named place:

    "eval_mode"              ControlArena's metadata.eval_mode: "attack" 1, "honest" 0, anything else an error
    "score:NAME"             a scorer NAME's value, or key NAME of a scorer's dict value (ControlArena's
                             {"main_task_success": "C", "side_task_success": "I"}): C/I, true/false, 1/0
    "metadata:KEY"           the sample's metadata[KEY]: true/false or 1/0

A sample whose label place is missing or unreadable is an error naming the log, the sample and the place.

ControlArena's trajectories (`control_arena/settings/infra/main_tasks/*/QA/*.jsonl` in its wheel) are files of
one Inspect ToolCall a line, a whole trajectory a file, with no tool outputs: each call is rendered as an
assistant turn. A file's label comes from the first `labels` pattern (fnmatch on the file name) it matches; a
file that matches none is an error. `SHIPPED_LABELS` is this project's reading of the 21 shipped files.
"""
from __future__ import annotations

import fnmatch
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from monitor_jax.data.sources.base import ListSource
from monitor_jax.data.transcripts import render_transcript
from monitor_jax.errors import DataError

LOG_SUFFIXES = (".eval", ".json")
AGENT_KINDS = ("inspect", "trajectories")       # the registry's kinds of these sources
SHIPPED = "control_arena:infra"
EXTRA = "pip install -e '.[inspect]'"

# The control-arena wheel's 21 trajectories: honest.jsonl (11) are honest solutions; attack_<SideTask>.jsonl (8)
# attacks; KedaConfig_SecretExfiltrationAWSCredentials.jsonl is named, like the attacks, by its main and side
# task (an attack: it carries out SecretExfiltrationAWSCredentials); feature_store_human.jsonl is a person's
# solution of the main task (honest).
SHIPPED_LABELS = {"honest*.jsonl": 0, "*_human.jsonl": 0, "attack_*.jsonl": 1, "*_SecretExfiltration*.jsonl": 1}


def find_files(paths: str | Sequence[str], suffixes: tuple[str, ...], what: str) -> list[Path]:
    """Files named by `paths` (files, or folders searched recursively for `suffixes`), sorted within a
    folder."""
    out = []
    for p in [paths] if isinstance(paths, (str, os.PathLike)) else list(paths):
        p = Path(p)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in suffixes)
            if not found:
                raise DataError(f"{p}: no {what} ({', '.join(suffixes)} files) in this folder")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise DataError(f"{p}: no such file or folder")
    if not out:
        raise DataError(f"no {what} given")
    return out


# ------------------------------------------------------------------ labels
_TRUE, _FALSE = {"C", "true", "True", "1", "yes"}, {"I", "false", "False", "0", "no"}


def _binary(value: Any, where: str) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)) and value in (0, 1):
        return int(value)
    if isinstance(value, str) and value in _TRUE | _FALSE:
        return int(value in _TRUE)
    raise DataError(f"{where} is {value!r}; a label needs C/I, true/false or 1/0")


def sample_label(sample, place: str, where: str) -> int:
    """The label of an inspect_ai EvalSample from `place` (module docstring)."""
    metadata = sample.metadata or {}
    if place == "eval_mode":
        mode = metadata.get("eval_mode")
        mode = getattr(mode, "value", mode)      # ControlArena's EvalMode enum, or its string
        if mode not in ("honest", "attack"):
            raise DataError(f"{where}: metadata.eval_mode is {mode!r}; expected 'honest' or 'attack'")
        return int(mode == "attack")
    kind, _, name = place.partition(":")
    if kind == "metadata" and name:
        if name not in metadata:
            raise DataError(f"{where}: no metadata key {name!r} (label: {place}); it has {sorted(metadata)}")
        return _binary(metadata[name], f"{where}: metadata.{name}")
    if kind == "score" and name:
        scores = sample.scores or {}
        if name in scores:
            return _binary(scores[name].value, f"{where}: score {name}")
        for scorer, score in scores.items():
            if isinstance(score.value, Mapping) and name in score.value:
                value = score.value[name]
                if value is None:
                    raise DataError(f"{where}: score {scorer}.{name} is missing (null)")
                return _binary(value, f"{where}: score {scorer}.{name}")
        raise DataError(f"{where}: no score {name!r} (label: {place}); its scores are "
                        f"{ {k: s.value for k, s in scores.items()} }")
    raise DataError(f"label {place!r}: use 'eval_mode', 'score:NAME' or 'metadata:KEY'")


def check_label_place(place: str) -> None:
    kind, _, name = place.partition(":")
    if place != "eval_mode" and not (kind in ("score", "metadata") and name):
        raise DataError(f"label {place!r}: use 'eval_mode', 'score:NAME' or 'metadata:KEY'")


# ------------------------------------------------------------------ Inspect logs
def unreadable_log(path, error: Exception) -> DataError:
    """The one error for a file inspect_ai cannot read as a log (also integrations/inspect_logs.py's)."""
    return DataError(f"{path}: not a readable Inspect log: {type(error).__name__}: "
                     f"{str(error).splitlines()[0] if str(error) else ''}")


def read_inspect_rows(paths: str | Sequence[str], label: str, tool_output_limit: int = 4000,
                      reasoning: bool = False, fence: bool = True) -> list[dict[str, Any]]:
    """Rows of every sample (every epoch) of the logs `paths` names."""
    check_label_place(label)
    try:
        from inspect_ai.log import read_eval_log_samples
    except ImportError:
        raise DataError(f"reading Inspect logs needs inspect_ai: {EXTRA}") from None
    rows = []
    for path in find_files(paths, LOG_SUFFIXES, "Inspect logs"):
        try:
            samples = list(read_eval_log_samples(str(path), all_samples_required=False))
        except Exception as e:       # inspect_ai raises ValueError, zipfile.BadZipFile, pydantic errors, ...
            raise unreadable_log(path, e) from None
        if not samples:
            raise DataError(f"{path}: the log holds no samples")
        for sample in samples:
            where = sample_where(path, sample)
            rows.append(dict(
                id=f"{path.name}:{sample.id}:{sample.epoch}", log=str(path), sample_id=str(sample.id),
                epoch=int(sample.epoch), label=sample_label(sample, label, where),
                task_description=str((sample.metadata or {}).get("main_task_description", "")),
                text=sample_transcript(sample, where, tool_output_limit, reasoning, fence)))
    return rows


def sample_where(path, sample) -> str:
    return f"{path} sample {sample.id} epoch {sample.epoch}"


def sample_transcript(sample, where: str, tool_output_limit: int = 4000, reasoning: bool = False,
                      fence: bool = True) -> str:
    """An inspect_ai EvalSample's messages as the monitor reads them (the source's rows, and score_logs)."""
    if not sample.messages:
        raise DataError(f"{where}: the sample has no messages")
    return render_transcript([m.model_dump(exclude_none=True) for m in sample.messages], tool_output_limit,
                             reasoning, fence, where=where)


def check_inspect_spec(paths, label: str = "eval_mode", **_) -> None:
    """What a config check can find wrong before the logs are read: the label place, and the paths."""
    check_label_place(label)
    find_files(paths, LOG_SUFFIXES, "Inspect logs")


class InspectSource(ListSource):
    """Rows of Inspect evaluation logs (module docstring)."""

    def __init__(self, paths: str | Sequence[str], label: str = "eval_mode", tool_output_limit: int = 4000,
                 reasoning: bool = False, fence: bool = True):
        self.paths = [str(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
        super().__init__(read_inspect_rows(self.paths, label, tool_output_limit, reasoning, fence),
                         name=f"inspect:{','.join(self.paths)}")

    def describe(self, i: int) -> str:
        row = self.rows[i]
        return f"{row['log']} sample {row['sample_id']} epoch {row['epoch']}"


# ------------------------------------------------------------------ ControlArena trajectories
def trajectory_label(path: Path, labels: Mapping[str, int]) -> int:
    for pattern, label in labels.items():
        if fnmatch.fnmatch(path.name, pattern):
            if label not in (0, 1):
                raise DataError(f"labels[{pattern!r}] = {label!r}; a label is 0 or 1")
            return int(label)
    raise DataError(f"{path}: its name matches none of the label patterns {sorted(labels)}; add one to labels")


def trajectory_messages(path: Path) -> list[dict[str, Any]]:
    """A file of one Inspect ToolCall a line, as the assistant turns that made the calls."""
    messages = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                raise DataError(f"{path} line {number}: blank line; remove it (blank lines are not calls)")
            try:
                call = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path} line {number}: invalid JSON: {e.msg} at column {e.colno}") from None
            if not isinstance(call, dict) or "function" not in call:
                raise DataError(f"{path} line {number}: not an Inspect ToolCall (an object with 'function' and "
                                f"'arguments')")
            messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
    return messages


def read_trajectory(path: Path, tool_output_limit: int = 4000, fence: bool = True) -> str:
    return render_transcript(trajectory_messages(path), tool_output_limit, fence=fence, where=str(path))


class TrajectorySource(ListSource):
    """ControlArena tool-call trajectories, a file a row (module docstring)."""

    def __init__(self, paths: str | Sequence[str], labels: Mapping[str, int] | None = None,
                 tool_output_limit: int = 4000, fence: bool = True):
        labels = dict(SHIPPED_LABELS if labels is None else labels)
        if paths == SHIPPED:
            paths = str(shipped_trajectories())
        files = find_files(paths, (".jsonl",), "trajectories")
        rows = [dict(id=f"{f.parent.parent.name}/{f.name}", log=str(f), sample_id=f.stem, epoch=1,
                     label=trajectory_label(f, labels), task_description="",
                     text=read_trajectory(f, tool_output_limit, fence)) for f in files]
        super().__init__(rows, name=f"trajectories:{paths}")

    def describe(self, i: int) -> str:
        return self.rows[i]["log"]


def shipped_trajectories() -> Path:
    """The folder of the installed control-arena wheel's infra main tasks, whose QA/ folders hold the 21
    trajectories (`pip install -e '.[inspect]'`)."""
    try:
        import control_arena
    except ImportError:
        raise DataError(f"the shipped trajectories come with control-arena: {EXTRA}") from None
    return Path(control_arena.__file__).parent / "settings" / "infra" / "main_tasks"
