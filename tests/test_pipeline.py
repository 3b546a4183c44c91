"""Pipelines of stages (studies/pipeline.py) and the elicitation table (studies/elicitation/pipeline.py): a stage
sees only the keys it declares, and a changed key, task definition or upstream output reruns exactly that stage
and those after it.

The elicitation table is checked as it is (its names, inputs, outputs and keys) with each stage's function
replaced by one that writes its outputs: `plan()` then says what a real run would rerun, for every key of the
demo elicitation config (tests/test_elicit.py runs the real stages).
"""
import dataclasses
import runpy

import ml_collections
import pytest

from monitor_jax import assemble
from monitor_jax.config import base_config
from monitor_jax.studies import pipeline as engine
from monitor_jax.studies.elicitation import pipeline as elicitation

from tests.test_elicit import CONFIG, _inline_thinking_task

THINKING = "my_thinking"


def _config() -> ml_collections.ConfigDict:
    """The demo elicitation config, with its thinking task written inline (a copy of the registered one)."""
    return _inline_thinking_task(runpy.run_path(str(CONFIG))["get_config"](), THINKING)


def _stub(stage: engine.Stage) -> engine.Stage:
    """The stage with a function that writes its outputs from its fingerprint (so a rerun writes other ones)."""
    def run(ctx):
        for f in stage.outputs:
            (ctx.directory / f).parent.mkdir(parents=True, exist_ok=True)
            (ctx.directory / f).write_text(f"{stage.name} {ctx.fingerprint}\n")
    return dataclasses.replace(stage, run=run)


@pytest.fixture
def done(tmp_path, capsys):
    """The elicitation table with stub functions, every stage done for `_config()`."""
    p = engine.Pipeline([_stub(s) for s in elicitation.STAGES], tmp_path, assemble.task, label="elicit")
    c = _config()
    assert p.plan(c) == list(elicitation.NAMES)
    assert p.run(c, ops=None) == "finished"
    assert p.plan(c) == []
    capsys.readouterr()
    return p, c


def _leaves(node, prefix=""):
    """Every leaf key of a config (a list or an empty section is one leaf), dotted."""
    for key in node.keys():
        value, name = node[key], f"{prefix}{key}"
        if isinstance(value, ml_collections.ConfigDict) and len(value):
            yield from _leaves(value, name + ".")
        else:
            yield name


def _other(key: str, value):
    """Another value of the same kind (a task name: another task)."""
    if key.rsplit(".", 1)[-1] in engine.TASK_FIELDS:
        return "chem_harm" if value != "chem_harm" else "imdb"
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "_changed"
    if isinstance(value, (list, tuple)):
        return list(value)[:-1] if value else [1]
    if isinstance(value, ml_collections.ConfigDict):
        return {"changed": 1}
    return 1


def _changed(c, key, value):
    out = c.copy_and_resolve_references()
    *parents, last = key.split(".")
    node = out
    for part in parents:
        node = node[part]
    with node.ignore_type():
        node[last] = value
    return out


def _expected(p: engine.Pipeline, readers) -> list[str]:
    """The stages that read the change, and every stage after them, in table order."""
    hit = {s.name for s in p.stages if s.name in readers}
    for name in list(hit):
        hit.update(p.downstream(name))
    return [n for n in p.names if n in hit]


def test_every_key_reruns_the_stages_that_declare_it_and_those_after_them_only(done):
    p, c = done
    read_by_none = []
    for key in _leaves(c):
        if key == engine.TASKS_KEY:
            continue        # the task definitions: the next test
        readers = [s.name for s in p.stages if any(key == k or key.startswith(k + ".") for k in s.keys)]
        changed = _changed(c, key, _other(key, c[key]))
        assert p.plan(changed) == _expected(p, readers), key
        if not readers:
            read_by_none.append(key)
    # Keys no stage reads rerun nothing (the check above covered them too).
    assert {"generate.max_new_tokens", "sweep.parallel", "workdir"} <= set(read_by_none)
    assert "elicit.keep_quantile" not in read_by_none
    # Every declared key was changed at least once.
    covered = set(_leaves(c))
    for s in p.stages:
        for k in s.keys:
            assert any(leaf == k or leaf.startswith(k + ".") for leaf in covered), (s.name, k)


def test_an_inline_tasks_prompt_reruns_the_stages_that_name_it_and_those_after_them(done):
    p, c = done
    changed = c.copy_and_resolve_references()
    spec = dict(changed.tasks[0])
    spec["messages"] = [list(m) for m in spec["messages"]]
    spec["messages"][-1][1] += " Think it over."
    changed.tasks = [spec]
    assert p.plan(changed) == ["predict", "pseudo_label", "train", "supervised", "eval_elicited", "eval_supervised",
                               "report"]
    # A task no stage names changes nothing.
    unused = c.copy_and_resolve_references()
    unused.tasks = [dict(c.tasks[0]), dict(c.tasks[0], name="unused_task")]
    assert p.plan(unused) == []


def test_a_changed_or_missing_output_reruns_its_stage_and_those_after_it(done):
    p, c = done
    (p.directory / "pseudo_labels.json").write_text("edited\n")
    assert p.plan(c) == ["pseudo_label", "train", "supervised", "eval_elicited", "eval_supervised", "report"]
    assert p.run(c, ops=None) == "finished" and p.plan(c) == []
    (p.directory / "eval/zero_shot/report.json").unlink()
    assert p.plan(c) == ["eval_zero_shot", "report"]


def test_a_rerun_upstream_stage_that_writes_the_same_outputs_leaves_the_rest_done(done, capsys):
    p, c = done
    assert p.run(c, ops=None, only="pseudo_label") == "finished"   # the stub writes the same file again
    assert p.plan(c) == []
    assert "running stage pseudo_label" in capsys.readouterr().out


def test_a_stage_sees_only_the_keys_it_declares(tmp_path):
    seen = {}

    def run(ctx):
        seen["lr"] = ctx.config.optim.lr
        seen["task"] = ctx.task(ctx.config.elicit.thinking_task).name
        seen["tasks"] = [t["name"] for t in ctx.config.tasks]
        with pytest.raises(engine.UndeclaredKey, match=r"stage 'a' reads the config key elicit.keep_quantile, "
                                                       r"which it does not declare"):
            ctx.config.elicit["keep_quantile"]
        with pytest.raises(AttributeError, match="reads the config key train, which it does not declare"):
            ctx.config.train   # noqa: B018
        with pytest.raises(engine.UndeclaredKey):
            ctx.config.elicit.get("keep_quantile", 0.0)    # no silent default either
        full = engine.fill(ctx.config, base_config())
        seen["filled"] = (full.optim.lr, full.elicit.keep_quantile, full.train.steps)

    c = _config()
    c.optim.lr = 0.25
    c.elicit.keep_quantile = 0.5
    c.train.steps = 7
    p = engine.Pipeline([engine.Stage("a", run, keys=("optim", "elicit.thinking_task"))], tmp_path, assemble.task)
    assert p.run(c, ops=None) == "finished"
    # Another inline task is not in the view; a filled config has the view's values and defaults elsewhere.
    assert seen == dict(lr=0.25, task=THINKING, tasks=[THINKING],
                        filled=(0.25, base_config().elicit.keep_quantile, base_config().train.steps))


def test_a_table_that_reads_a_later_stage_or_declares_a_key_twice_is_refused(tmp_path):
    a, b = engine.Stage("a", lambda ctx: None), engine.Stage("b", lambda ctx: None, inputs=("a",))
    with pytest.raises(ValueError, match=r"stage 'b' reads \['a'\], which are not stages before it"):
        engine.Pipeline([b, a], tmp_path, assemble.task)
    with pytest.raises(ValueError, match="declares a key twice or a key and its section"):
        engine.Pipeline([engine.Stage("a", lambda ctx: None, keys=("eval", "eval.buckets"))], tmp_path,
                        assemble.task)


def test_a_stage_that_stops_early_is_not_done(tmp_path):
    calls = []

    def train(ctx):
        calls.append(ctx.fingerprint)
        return "preempted" if len(calls) == 1 else "finished"

    p = engine.Pipeline([engine.Stage("train", train, keys=("train.steps",))], tmp_path, assemble.task)
    c = _config()
    assert p.run(c, ops=None) == "preempted" and p.plan(c) == ["train"]
    assert p.run(c, ops=None) == "finished" and p.plan(c) == [] and calls[0] == calls[1]
