"""Data sources: JSONL, Parquet, TFDS (built from JSONL folders), filters, the registry, pickling."""
import json
import logging
import os
import pickle
import re
import socket
import subprocess
import sys

import grain
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from monitor_jax.data.sources import (DataError, FilteredSource, JsonlSource, ParquetSource, Source, SubsetSource,
                                      TfdsSource, check_spec, describe, open_source)
from monitor_jax.errors import ConfigError
from monitor_jax.data.tfds_jsonl import build_tfds_from_jsonl, parse_features

ROWS = [
    {"id": f"r{i}", "prompt": f"prompt {i}", "is_harmful": i % 2, "score": i / 4,
     "messages": [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": "ok"}][: i % 3]}
    for i in range(10)
]


def write_jsonl(path, rows, end="\n"):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows)[:-1] + end)
    return path


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def all_rows(source):
    return [source[i] for i in range(len(source))]


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


# ---------------------------------------------------------------- JSONL

def test_jsonl_reads_rows_and_renames_fields(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", ROWS)
    source = JsonlSource(path, fields={"text": "prompt", "label": "is_harmful"}, required=["text", "label"])
    assert len(source) == len(ROWS)
    first = source[0]
    assert first == {"id": "r0", "text": "prompt 0", "label": 0, "score": 0.0, "messages": []}
    assert source[4]["text"] == "prompt 4" and source[4]["label"] == 0 and source[4]["messages"] == ROWS[4]["messages"]
    assert source.describe(6) == f"{path} line 7"
    assert all_rows(JsonlSource(path)) == ROWS  # no renaming: rows as written


def test_jsonl_without_final_newline(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", ROWS[:3], end="")
    assert all_rows(JsonlSource(path)) == ROWS[:3]


def test_jsonl_several_files_and_glob(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", ROWS[:4])
    b = write_jsonl(tmp_path / "b.jsonl", ROWS[4:])
    listed = JsonlSource([a, b])
    globbed = JsonlSource(str(tmp_path / "*.jsonl"))
    assert all_rows(listed) == all_rows(globbed) == ROWS
    assert listed.describe(3) == f"{a} line 4"
    assert listed.describe(4) == f"{b} line 1"
    with pytest.raises(DataError, match="no files match"):
        JsonlSource(str(tmp_path / "*.json"))
    with pytest.raises(DataError, match="no such data file"):
        JsonlSource(tmp_path / "missing.jsonl")


def test_jsonl_malformed_line_names_file_and_line(tmp_path):
    lines = [json.dumps(r) for r in ROWS[:5]]
    lines[2] = '{"prompt": "cut short",'
    path = write_lines(tmp_path / "bad.jsonl", lines)
    source = JsonlSource(path)  # indexing does not parse; reading does
    assert source[1] == ROWS[1]
    with pytest.raises(DataError, match=re.escape(f"{path} line 3: invalid JSON")):
        source[2]
    with pytest.raises(DataError, match=re.escape(f"{path} line 3:")):
        source.validate()


@pytest.mark.parametrize("lines, bad_line", [
    (['{"a": 1}', "", '{"a": 2}'], 2),
    (['{"a": 1}', "  \t", '{"a": 2}'], 2),
    (['{"a": 1}', '{"a": 2}', ""], 3),  # two newlines at the end: the second ends a blank line
])
def test_jsonl_blank_line_is_an_error(tmp_path, lines, bad_line):
    path = write_lines(tmp_path / "blank.jsonl", lines)
    with pytest.raises(DataError, match=re.escape(f"{path} line {bad_line}: blank line")):
        JsonlSource(path)


def test_jsonl_line_that_is_not_an_object(tmp_path):
    path = write_lines(tmp_path / "list.jsonl", ['{"a": 1}', "[1, 2]"])
    with pytest.raises(DataError, match=re.escape(f"{path} line 2: expected a JSON object, got list")):
        JsonlSource(path).validate()


def test_missing_required_field_names_it_and_the_fields_present(tmp_path):
    rows = [dict(ROWS[0]), {k: v for k, v in ROWS[1].items() if k != "is_harmful"}]
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    source = JsonlSource(path, fields={"label": "is_harmful"}, required=["label"])
    assert source[0]["label"] == 0
    with pytest.raises(DataError) as e:
        source[1]
    message = str(e.value)
    assert f"{path} line 2" in message
    assert "'label' (read from 'is_harmful') is missing" in message
    assert str(sorted(rows[1])) in message


def test_null_required_field_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [{"text": None}])
    with pytest.raises(DataError, match=re.escape(f"{path} line 1: required field 'text' is null")):
        JsonlSource(path, required=["text"])[0]


def test_renaming_onto_an_existing_field_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [{"text": "a", "prompt": "b"}])
    with pytest.raises(DataError, match="renamed to 'text', but the row already has a field 'text'"):
        JsonlSource(path, fields={"text": "prompt"})[0]


# ---------------------------------------------------------------- Parquet

def test_parquet_round_trip_with_chat_messages_and_row_groups(tmp_path):
    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), path, row_group_size=3)
    assert pq.ParquetFile(path).metadata.num_row_groups == 4
    source = ParquetSource(path, fields={"text": "prompt"})
    # Backwards, so every read lands in another row group than the cached one.
    rows = [source[i] for i in reversed(range(len(source)))][::-1]
    expected = [{**{k: v for k, v in r.items() if k != "prompt"}, "text": r["prompt"]} for r in ROWS]
    assert rows == expected
    assert rows[2]["messages"] == [{"role": "user", "content": "hi 2"}, {"role": "assistant", "content": "ok"}]
    assert source.describe(7) == f"{path} row 7 (0-based)"


def test_parquet_several_files_and_required_null(tmp_path):
    pq.write_table(pa.Table.from_pylist(ROWS[:4]), tmp_path / "a.parquet", row_group_size=3)
    pq.write_table(pa.Table.from_pylist([*ROWS[4:], {"id": "r10", "prompt": None}]), tmp_path / "b.parquet")
    source = ParquetSource(str(tmp_path / "*.parquet"), fields={"text": "prompt"}, required=["text"])
    assert len(source) == 11
    assert [source[i]["id"] for i in range(10)] == [r["id"] for r in ROWS]
    assert source.describe(4) == f"{tmp_path / 'b.parquet'} row 0 (0-based)"
    with pytest.raises(DataError, match=re.escape("b.parquet row 6 (0-based): required field 'text' "
                                                  "(read from 'prompt') is null")):
        source[10]


# ---------------------------------------------------------------- TFDS

FEATURES = {"id": "text", "prompt": "text", "is_harmful": "int64", "score": "float64", "messages": "messages"}


@pytest.fixture
def jsonl_dir(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    # A field outside the schema ("extra") is not stored.
    write_jsonl(src / "train.jsonl", [{**r, "extra": [1, 2]} for r in ROWS])
    write_jsonl(src / "test.jsonl", ROWS[:3])
    return src


def test_tfds_build_from_jsonl_then_read_in_file_order(tmp_path, jsonl_dir, no_network):
    data_dir = tmp_path / "tfds"
    build_tfds_from_jsonl(jsonl_dir, "my_monitor_data", data_dir, FEATURES)
    assert sorted(os.listdir(data_dir)) == ["my_monitor_data"]
    train = TfdsSource("my_monitor_data", "train", data_dir=data_dir)
    assert all_rows(train) == ROWS  # file order, str text, Python numbers, messages as a list of dicts
    assert all_rows(TfdsSource("my_monitor_data", "test", data_dir=data_dir)) == ROWS[:3]
    renamed = TfdsSource("my_monitor_data", "train[2:4]", data_dir=data_dir, fields={"text": "prompt"})
    assert [r["text"] for r in all_rows(renamed)] == ["prompt 2", "prompt 3"]
    assert train.describe(3) == f"TFDS my_monitor_data split 'train' (data_dir={data_dir}) row 3"


def test_tfds_build_error_names_file_and_line_and_keeps_old_data(tmp_path, jsonl_dir):
    data_dir = tmp_path / "tfds"
    build_tfds_from_jsonl(jsonl_dir, "ds", data_dir, {"id": "text", "is_harmful": "int64"})
    with pytest.raises(DataError, match="already exists"):
        build_tfds_from_jsonl(jsonl_dir, "ds", data_dir, {"id": "text", "is_harmful": "int64"})
    write_jsonl(jsonl_dir / "test.jsonl", [ROWS[0], {**ROWS[1], "is_harmful": 1.5}])
    with pytest.raises(DataError, match=re.escape(f"{jsonl_dir / 'test.jsonl'} line 2: field 'is_harmful' "
                                                  f"is declared int64 and must be an integer, got 1.5")):
        build_tfds_from_jsonl(jsonl_dir, "ds", data_dir, {"id": "text", "is_harmful": "int64"}, overwrite=True)
    missing = f"{jsonl_dir / 'test.jsonl'} line 1: required field 'label' is missing"
    with pytest.raises(DataError, match=re.escape(missing)):
        build_tfds_from_jsonl(jsonl_dir, "ds", data_dir, {"label": "int64"}, overwrite=True)
    # The failed rebuilds left the first build readable.
    assert len(TfdsSource("ds", "test", data_dir=data_dir)) == 3


def test_tfds_source_errors(tmp_path, jsonl_dir):
    with pytest.raises(DataError, match="'nothing_here' split 'train' .* not found"):
        TfdsSource("nothing_here", "train", data_dir=tmp_path)
    build_tfds_from_jsonl(jsonl_dir, "ds", tmp_path / "tfds", {"id": "text"})
    with pytest.raises(DataError, match="Unknown split 'validation'"):
        TfdsSource("ds", "validation", data_dir=tmp_path / "tfds")
    with pytest.raises(DataError, match="unknown feature kinds {'id': 'string'}"):
        build_tfds_from_jsonl(jsonl_dir, "ds2", tmp_path / "tfds", {"id": "string"})
    with pytest.raises(DataError, match="snake_case"):
        build_tfds_from_jsonl(jsonl_dir, "My-Data", tmp_path / "tfds", {"id": "text"})


def test_tfds_cli_then_read_in_another_process(tmp_path, jsonl_dir):
    data_dir = tmp_path / "tfds"

    def cli(features):
        return subprocess.run([sys.executable, "-m", "monitor_jax.data.tfds_jsonl", "--src", str(jsonl_dir),
                               "--name", "cli_ds", "--data_dir", str(data_dir), "--features", features],
                              capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))

    built = cli("id:text, is_harmful:int64")
    assert built.returncode == 0, built.stderr
    # This process never saw the builder class: it reads the dataset from its files alone.
    source = TfdsSource("cli_ds", "train", data_dir=data_dir)
    assert all_rows(source) == [{"id": r["id"], "is_harmful": r["is_harmful"]} for r in ROWS]
    refused = cli("text")
    assert refused.returncode == 1 and "error: feature 'text' in 'text' is not NAME:KIND" in refused.stderr
    assert parse_features("text:text,label:int64") == {"text": "text", "label": "int64"}


# ---------------------------------------------------------------- filter, factory, pickling, grain

def test_filtered_source_counts_and_reports(tmp_path, caplog):
    path = write_jsonl(tmp_path / "train.jsonl", ROWS)
    with caplog.at_level(logging.INFO, logger="monitor_jax.data"):
        harmful = FilteredSource(JsonlSource(path), lambda row: row["is_harmful"] == 1, name="harmful_only")
    assert harmful.report() == {"name": "harmful_only", "kept": 5, "dropped": 5}
    assert "'harmful_only' kept 5 rows and dropped 5 of 10" in caplog.text
    assert [r["id"] for r in all_rows(harmful)] == ["r1", "r3", "r5", "r7", "r9"]
    assert harmful.describe(1) == f"{path} line 4"
    with pytest.raises(DataError, match=re.escape(f"filter 'broken' failed on {path} line 1: KeyError('nope')")):
        FilteredSource(JsonlSource(path), lambda row: row["nope"], name="broken")
    with pytest.raises(DataError, match="filter 'none' dropped all 10 rows"):
        FilteredSource(JsonlSource(path), lambda row: False, name="none")


def test_open_source_factory(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", ROWS)
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "train.parquet")
    jsonl = open_source({"kind": "jsonl", "path": str(path), "fields": {"text": "prompt"}})
    parquet = open_source({"kind": "parquet", "path": str(tmp_path / "train.parquet")})
    assert jsonl[3]["text"] == "prompt 3" and parquet[3] == ROWS[3]
    with pytest.raises(DataError, match=re.escape(
            "source kind 'csv' is not one of ['demo', 'inspect', 'jsonl', 'parquet', 'research', 'rows', 'tfds', "
            "'trajectories']")):
        open_source({"kind": "csv", "path": "x.csv"})
    with pytest.raises(DataError, match=re.escape("a jsonl source needs path; ['fields', 'kind'] lacks ['path']")):
        open_source({"kind": "jsonl", "fields": {}})
    # The earlier name of `path` is gone: an unknown key, named with what the kind takes.
    with pytest.raises(DataError, match=re.escape("has unknown key(s) ['path_or_paths']; a jsonl source takes "
                                                  "['fields', 'kind', 'n', 'path', 'required', 'seed', 'where']")):
        open_source({"kind": "jsonl", "path_or_paths": str(path)})


def test_every_kind_and_wrapper_is_a_source(tmp_path):
    """One base class: every kind, and the `n` and `where` wrappers around any of them, describe their rows."""
    path = write_jsonl(tmp_path / "train.jsonl", ROWS)
    rows = open_source({"kind": "rows", "rows": ROWS, "name": "mine", "n": 6, "seed": 2, "where": {"is_harmful": 1}})
    assert isinstance(rows, FilteredSource) and isinstance(rows.source, SubsetSource)
    assert all(isinstance(s, Source) for s in (rows, rows.source, rows.source.source))
    assert [rows[i]["is_harmful"] for i in range(len(rows))] == [1] * len(rows) and 0 < len(rows) < 6
    assert rows.describe(0).startswith("mine row ")
    subset = open_source({"kind": "jsonl", "path": str(path), "n": 3})
    assert subset.name == f"{path} (3 rows, seed 0)" and subset.describe(0).startswith(f"{path} line ")
    assert describe(subset, 0) == subset.describe(0) and describe(ROWS, 4) == "row 4"   # a plain list of rows
    demo = open_source({"kind": "demo", "domain": "imdb", "split": "test", "n": 10, "where": {"label": [0, 1]}})
    assert len(demo) == 10 and demo.name == "demo:imdb/test where {'label': [0, 1]}"


def test_check_spec_names_the_config_key(tmp_path):
    check_spec({"kind": "jsonl", "path": "not/opened/yet.jsonl"}, "", "eval.tasks[0].source")   # keys only
    with pytest.raises(ConfigError, match=re.escape("eval.tasks[2].source: source kind 'csv' is not one of")):
        check_spec({"kind": "csv"}, "", "eval.tasks[2].source")
    with pytest.raises(ConfigError, match=re.escape("elicit.source: source spec {'kind': 'tfds', 'name': 'd', "
                                                    "'split': 'train', 'dir': 'x'} has unknown key(s) ['dir']")):
        check_spec({"kind": "tfds", "name": "d", "split": "train", "dir": "x"}, "", "elicit.source")
    with pytest.raises(ConfigError, match=re.escape(f"data.instruction.source: {tmp_path}/instruct/train.jsonl does "
                                                    f"not exist (data_root={str(tmp_path)!r}")):
        check_spec({"kind": "research", "domain": "instruct", "split": "train"}, str(tmp_path),
                   "data.instruction.source")
    with pytest.raises(ConfigError, match=re.escape("data.classification[0].source: a source spec is a dict")):
        check_spec("data.jsonl", "", "data.classification[0].source")


def test_jsonl_and_parquet_specs_take_path_as_a_file_a_glob_or_a_list(tmp_path):
    """Configs write {"kind": "jsonl", "path": ...}: a file, a glob pattern or a list of either."""
    write_jsonl(tmp_path / "a.jsonl", ROWS[:4])
    write_jsonl(tmp_path / "b.jsonl", ROWS[4:])
    assert len(open_source({"kind": "jsonl", "path": str(tmp_path / "a.jsonl")})) == 4
    assert len(open_source({"kind": "jsonl", "path": str(tmp_path / "*.jsonl")})) == len(ROWS)
    both = open_source({"kind": "jsonl", "path": [str(tmp_path / "b.jsonl"), str(tmp_path / "a.jsonl")]})
    assert [both[i]["id"] for i in range(len(ROWS))] == [r["id"] for r in ROWS[4:] + ROWS[:4]]
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "t.parquet")
    assert len(open_source({"kind": "parquet", "path": str(tmp_path / "t.parquet")})) == len(ROWS)


def test_sources_pickle_and_work_under_grain(tmp_path, jsonl_dir):
    path = write_jsonl(tmp_path / "train.jsonl", ROWS)
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "train.parquet", row_group_size=4)
    build_tfds_from_jsonl(jsonl_dir, "ds", tmp_path / "tfds", FEATURES)
    sources = [JsonlSource(path), ParquetSource(tmp_path / "train.parquet"),
               TfdsSource("ds", "train", data_dir=tmp_path / "tfds"),
               FilteredSource(JsonlSource(path), lambda row: True, name="all")]  # a lambda predicate
    for source in sources:
        source[5]  # fill any cache before pickling
        copy = pickle.loads(pickle.dumps(source))
        assert all_rows(copy) == ROWS
        threaded = grain.MapDataset.source(copy).to_iter_dataset(grain.ReadOptions(num_threads=4))
        assert list(threaded) == ROWS
