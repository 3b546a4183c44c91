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


def test_training_on_an_inspect_source_goes_through_the_mixture_and_resumes(logs, tmp_path, demo_tokenizer):
    """The demo's mixture (instruction rows at a 0.75 classification ratio) with the classification rows read from
    an Inspect log: 4 steps straight equal 2 + 2 resumed (parameters and every step's data hash), and the
    transcripts longer than data.max_length are cut by the task's policy and counted."""
    import jax
    import numpy as np

    from monitor_jax.commands.train import train
    from monitor_jax.model.tokenizer import load_tokenizer
    from tests.train_helpers import run_config

    def config(workdir, **train_keys):
        c = run_config(workdir, demo_tokenizer, steps=4, **train_keys)
        c.data.max_length = 256
        c.data.classification = [{"task": "control_arena", "weight": 1.0, "source": {
            "kind": "inspect", "paths": [str(logs["eval"].parent)], "tool_output_limit": 300}}]
        return c

    def metrics(workdir):
        return [json.loads(line) for line in open(workdir / "metrics.jsonl")]

    straight = train(config(tmp_path / "straight"))
    assert straight.status == "finished" and straight.step == 4
    first = train(config(tmp_path / "resumed", run_steps=2))
    assert first.status == "paused" and first.step == 2
    second = train(config(tmp_path / "resumed"))
    assert second.status == "finished" and second.step == 4
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                 jax.device_get(straight.state.params), jax.device_get(second.state.params))
    hashes = [{r["step"]: r["train/data_hash"] for r in metrics(w) if "train/data_hash" in r}
              for w in (tmp_path / "straight", tmp_path / "resumed")]
    assert hashes[0] == hashes[1] and sorted(hashes[0]) == [1, 2, 3, 4]
    # Every transcript is longer than 256 tokens here: every classification row is cut, and counted.
    tok = load_tokenizer(demo_tokenizer)
    texts = [r["text"] for r in open_source({"kind": "inspect", "paths": str(logs["eval"]),
                                             "tool_output_limit": 300}).rows]
    assert min(len(tok.encode(t)) for t in texts) > 256
    steps = [r for r in metrics(tmp_path / "straight") if "train/data_hash" in r]
    assert all(r["train/cls_rows/control_arena"] > 0 and r["train/sft_tokens"] > 0 for r in steps)   # mixed
    # (the count is the run's so far)
    assert [r["train/truncated/control_arena"] for r in steps] == \
        list(np.cumsum([r["train/cls_rows/control_arena"] for r in steps]))
