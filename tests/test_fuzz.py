"""Fuzz (hypothesis): every JSONL input either scores with exactly one output row per input row, or stops with
the project's own error naming the file and line; every config override either validates or is a ConfigError
naming the key. Never a foreign exception, never a lost or duplicated row. Bounded example counts for CI.
"""
import json
import os
import string
from pathlib import Path

import pytest
from absl import flags
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from monitor_jax.config import validate
from monitor_jax.errors import ConfigError, MonitorError

REPO = Path(__file__).resolve().parents[1]
DEMO = str(REPO / "configs" / "demo.py")
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "60")), deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# ------------------------------------------------------------------ JSONL rows through `score`
@pytest.fixture(scope="module")
def scoring(tmp_path_factory):
    from flax import nnx

    from monitor_jax.assemble import Runtime
    from monitor_jax.data import tasks
    from monitor_jax.data.demo import build_demo_tokenizer
    from monitor_jax.eval.scoring import Scorer
    from monitor_jax.model import ModelConfig, create_model
    from monitor_jax.model.tokenizer import load_tokenizer
    from monitor_jax.parallel import make_mesh

    tok_dir = tmp_path_factory.mktemp("tok")
    build_demo_tokenizer(tok_dir)
    tok = load_tokenizer(tok_dir)
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    model = create_model(ModelConfig(family="llama", vocab_size=tok.vocab_size, embed_dim=32, num_layers=1,
                                     num_heads=4, num_kv_heads=2, head_dim=8, mlp_dim=32), mesh=mesh)
    loaded = Runtime(None, mesh, tok, str(tok_dir), lambda name: tasks.get(name), nnx.graphdef(model), model.cfg,
                     nnx.state(model, nnx.Param), "tiny model")
    scorer = Scorer(loaded.graphdef, mesh, 8, (64, 128), tok.pad_id)
    return loaded, scorer, tasks.get("chem_harm"), tmp_path_factory.mktemp("fuzz")


TEXT = st.one_of(st.text(max_size=120), st.integers(-10**6, 10**6),
                 st.integers(200, 3000).map(lambda n: " ".join(f"w{i % 50}" for i in range(n))))   # huge rows
VALID = st.fixed_dictionaries(
    {"text": TEXT},
    optional={"id": st.one_of(st.text(max_size=10), st.integers(), st.none()),
              "label": st.sampled_from([0, 1, True, False]),
              "extra": st.recursive(st.none() | st.booleans() | st.text(max_size=5),
                                    lambda c: st.lists(c, max_size=3), max_leaves=5)}
).map(lambda row: ("ok", json.dumps(row, ensure_ascii=False).encode()))
WRONG = st.one_of(
    st.fixed_dictionaries({"text": st.one_of(st.none(), st.booleans(), st.lists(st.integers(), max_size=2),
                                             st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))}),
    st.fixed_dictionaries({"text": st.text(max_size=20),
                           "label": st.one_of(st.text(max_size=3), st.floats(), st.none(), st.integers(2, 9),
                                              st.lists(st.integers(0, 1), min_size=1, max_size=2))}),
    st.fixed_dictionaries({"label": st.sampled_from([0, 1])}),                       # the prompt's field missing
    st.one_of(st.lists(st.integers(), max_size=3), st.integers(), st.text(max_size=5)),   # not an object
).map(lambda row: ("bad", json.dumps(row).encode()))
TRUNCATED = VALID.flatmap(lambda v: st.integers(0, len(v[1]) - 1).map(lambda k: ("bad", v[1][:k])))
RANDOM_BYTES = st.binary(max_size=40).filter(lambda b: b"\n" not in b).map(lambda b: ("bad", b))
NON_JSON_CONSTANT = st.sampled_from([b'{"text": "a", "id": NaN}', b'{"text": Infinity}']).map(lambda b: ("bad", b))
LINE = st.one_of(VALID, VALID, VALID, WRONG, TRUNCATED, RANDOM_BYTES, NON_JSON_CONSTANT)


@FUZZ
@given(lines=st.one_of(st.lists(VALID, min_size=1, max_size=12), st.lists(LINE, min_size=1, max_size=12)))
def test_every_jsonl_input_scores_row_for_row_or_names_its_line(scoring, lines):
    from monitor_jax.commands.score import score_file

    loaded, scorer, task, root = scoring
    path, out = root / "rows.jsonl", root / "scores.jsonl"
    out.unlink(missing_ok=True)
    path.write_bytes(b"".join(line + b"\n" for _, line in lines))
    blank = [k for k, (_, line) in enumerate(lines, 1) if not line.strip()]
    bad = [k for k, (kind, line) in enumerate(lines, 1) if kind == "bad" or not line.strip()]
    try:
        counts = score_file(loaded, scorer, task, str(path), str(out))
    except MonitorError as e:
        event(f"stopped: {type(e).__name__}")
        # The whole file is indexed first (blank lines), then rows are encoded in order.
        first = blank[0] if blank else bad[0] if bad else None
        assert first is not None, f"valid input rejected: {e}"
        assert f"{path} line {first}" in str(e), (str(e), lines)
        assert not out.exists()
        return
    event(f"scored ({'some' if counts['truncated'] else 'none'} truncated)")
    assert not bad, f"bad lines {bad} were accepted: {[lines[k - 1] for k in bad]}"
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["index"] for r in written) == list(range(len(lines))) and counts["rows"] == len(lines)
    rows = [json.loads(line) for _, line in lines]
    for r in written:
        assert r["id"] == rows[r["index"]].get("id", r["index"])
        assert ("label" in r) == ("label" in rows[r["index"]])
        assert isinstance(r["score"], float) and r["truncated"] >= 0


# ------------------------------------------------------------------ config overrides
def _leaf_keys() -> list[str]:
    import sys

    sys.path.insert(0, str(REPO))
    from configs.demo import get_config

    def walk(node, prefix):
        for k, v in node.items():
            key = f"{prefix}{k}"
            if hasattr(v, "items"):
                yield from walk(v, key + ".")
            elif not isinstance(v, list):     # lists of dicts are not overridable from flags
                yield key
    return sorted(walk(get_config(), ""))


KEYS = _leaf_keys()
VALUES = st.one_of(st.integers(-3, 10**6).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
                   st.text(alphabet=string.ascii_letters + string.digits + "-_.,()[]' ", max_size=8),
                   st.sampled_from(["true", "false", "", "-1", "0", "1e9", "()", "(0,)", "(8, 4)"]))
MISSPELT = st.tuples(st.sampled_from(KEYS), st.sampled_from(["x", "s", "_"])).map(lambda t: t[0] + t[1])


@FUZZ
@given(overrides=st.lists(st.tuples(st.one_of(st.sampled_from(KEYS), MISSPELT), VALUES), min_size=1, max_size=3))
def test_every_config_override_validates_or_names_its_key(overrides):
    from monitor_jax.main import define_flags, parse

    argv = ["monitor_jax", "train", f"--config={DEMO}"] + [f"--config.{k}={v}" for k, v in overrides]
    flag_values = flags.FlagValues()
    holder = define_flags(flag_values, argv)
    try:
        parse(argv, flag_values)
        validate(holder.value, 8)
        event("valid")
    except ConfigError as e:
        event("ConfigError")
        named = [k for k, _ in overrides if k.split(".")[-1] in str(e) or k in str(e)]
        assert named, (str(e), overrides)
