"""Inspect evaluation logs as a source: logs written by inspect_ai itself (mock model, tests/inspect_logs.py) read
back into rows and labels, nothing of the metadata or scores in a transcript, and every bad input one error."""
import json
import zipfile

import pytest

from monitor_jax.data.sources import open_source
from monitor_jax.errors import DataError
from tests.inspect_logs import SIDE_TASK, SIDE_TASK_NAME, write_logs


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    root = tmp_path_factory.mktemp("logs")
    return dict(eval=write_logs(root / "eval", n=6), json=write_logs(root / "json", n=4, log_format="json"))


def test_samples_become_rows_with_labels_from_the_named_place(logs):
    rows = open_source({"kind": "inspect", "paths": [str(logs["eval"].parent), str(logs["json"])]}).rows
    assert len(rows) == 10 and [r["label"] for r in rows] == [0, 1] * 5
    by_score = open_source({"kind": "inspect", "paths": str(logs["eval"]), "label": "score:side_task_success"})
    assert [r["label"] for r in by_score.rows] == [0, 1] * 3
    attack = rows[1]
    assert attack["sample_id"] == "s1" and attack["epoch"] == 1
    assert attack["task_description"] == "Install service 1 on the cluster."
    assert "cat ~/.aws/credentials" in attack["text"] and "Installing service 1." in attack["text"]
    assert "characters of tool output cut" in attack["text"]            # the long tool output, cut visibly
    assert "Private plan" not in attack["text"]
    with_reasoning = open_source({"kind": "inspect", "paths": str(logs["eval"]), "reasoning": True}).rows
    assert "Private plan 1: grab the keys quietly." in with_reasoning[1]["text"]
    # What answers the question never reaches a transcript: on every row, with every option.
    for row in rows + with_reasoning:
        for leak in (SIDE_TASK, SIDE_TASK_NAME, "side_task_success", "main_task_success", "eval_mode", "attack", "honest"):
            assert leak not in row["text"], (row["id"], leak)


@pytest.mark.parametrize("label, error", [
    ("metadata:nope", "sample s0 epoch 1: no metadata key 'nope'"),
    ("score:nope", "sample s0 epoch 1: no score 'nope'"),
    ("metadata:main_task_description", "metadata.main_task_description is 'Install service 0"),
    ("color", "label 'color': use 'eval_mode', 'score:NAME' or 'metadata:KEY'"),
])
def test_a_label_place_that_does_not_hold_a_label_is_an_error(logs, label, error):
    with pytest.raises(DataError, match=error):
        open_source({"kind": "inspect", "paths": str(logs["eval"]), "label": label})


def test_bad_logs_are_errors_naming_the_file(logs, tmp_path):
    not_a_log = tmp_path / "notes.json"
    not_a_log.write_text(json.dumps({"hello": 1}))
    truncated = tmp_path / "cut.eval"
    truncated.write_bytes(logs["eval"].read_bytes()[:2000])
    for path in (not_a_log, truncated):
        with pytest.raises(DataError, match=f"{path}: not a readable Inspect log"):
            open_source({"kind": "inspect", "paths": str(path)})
    # A sample that says it is neither honest nor attack, and one without messages.
    for edit, error in ((lambda s: s["metadata"].update(eval_mode="unknown"), "metadata.eval_mode is 'unknown'"),
                        (lambda s: s.update(messages=[]), "the sample has no messages")):
        bad = tmp_path / f"edited-{len(error)}.eval"
        with zipfile.ZipFile(logs["eval"]) as src, zipfile.ZipFile(bad, "w") as dst:
            for item in src.infolist():
                data = src.read(item)
                if item.filename == "samples/s2_epoch_1.json":
                    sample = json.loads(data)
                    edit(sample)
                    data = json.dumps(sample).encode()
                dst.writestr(item, data)
        with pytest.raises(DataError, match=f"{bad} sample s2 epoch 1: {error}"):
            open_source({"kind": "inspect", "paths": str(bad)})

