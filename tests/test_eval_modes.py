"""Eval modes are plug-ins: a mode defined and registered here alone runs through config -> assemble -> Evaluator
-> report like the built-in ones, and the typed results survive their report.json."""
import dataclasses
import json
import math
import re
import runpy
from pathlib import Path

import jax
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from monitor_jax import assemble
from monitor_jax.config import validate
from monitor_jax.data.encode import ClassificationEncoder
from monitor_jax.errors import ConfigError
from monitor_jax.eval import modes
from monitor_jax.eval.report import write_report
from monitor_jax.eval.results import EvalResult

REPO = Path(__file__).resolve().parents[1]


class SwappedEncoder(ClassificationEncoder):
    """The task's prompt with its two labels swapped; the item's `offset` rides along to `run`."""

    def __init__(self, task, tokenizer, max_length, offset):
        super().__init__(dataclasses.replace(task, positive=task.negative, negative=task.positive), tokenizer,
                         max_length)
        self.offset = offset


class Swapped(modes.Mode):
    """Scored like single-token with the labels swapped (log-odds logit(negative) - logit(positive)), plus the
    item's `offset`."""
    name = "swapped"
    keys = ("offset",)
    encoder_type = SwappedEncoder
    legend, line_style, roc_label = "swapped", "-.", " swapped"

    def check(self, item, where):
        super().check(item, where)
        offset = item.get("offset", 0.0)
        if isinstance(offset, bool) or not isinstance(offset, (int, float)) or not math.isfinite(offset):
            raise ConfigError(f"{where}.offset={offset!r} must be a finite number")

    def encoder(self, task, tokenizer, max_length, item, needs):
        return SwappedEncoder(task, tokenizer, max_length, float(item.get("offset", 0.0)))

    def labels(self, s):
        return s.task.negative, s.task.positive

    def run(self, params, s, scorer, sampler, progress):
        scores = modes.Scores.of(scorer.score_all(params, s.examples, progress=progress))
        scores.log_odds = scores.log_odds + s.encoder.offset
        scores.p_positive = 1 / (1 + np.exp(-scores.log_odds))
        scores.extras = dict(offset=s.encoder.offset)
        scores.row_extras = dict(swapped=[True] * len(s.examples))
        scores.metrics = dict(mean_log_odds=float(np.mean(scores.log_odds)))
        return scores

    def report_lines(self, sets):
        return ["", "Swapped labels:", ""] + [f"- {s.name}: offset {s.extras['offset']}" for s in sets]


@pytest.fixture
def swapped():
    mode = modes.register(Swapped())
    yield mode
    modes.unregister(mode.name)   # later tests see the three built-in modes only


def _config(tmp_path, tokenizer, items):
    c = runpy.run_path(str(REPO / "configs/demo.py"))["get_config"]()
    c.workdir, c.model.tokenizer = str(tmp_path), tokenizer
    c.model.config = dict(family="llama", embed_dim=32, num_layers=1, num_heads=4, num_kv_heads=2, head_dim=8,
                          mlp_dim=32)
    c.mesh = dict(data=2, fsdp=2, tensor=2)
    c.eval.tasks, c.eval.max_rows, c.eval.bootstrap, c.eval.batch_size = items, 16, 0, 8
    return c


SOURCE = {"kind": "demo", "domain": "chem_harm", "split": "test", "n": 16}


def test_a_mode_registered_by_a_test_evaluates_a_set_end_to_end(swapped, tmp_path, demo_tokenizer):
    c = _config(tmp_path, demo_tokenizer, [
        {"task": "chem_harm", "source": SOURCE},
        {"task": "chem_harm", "source": SOURCE, "name": "chem_swapped", "mode": "swapped", "offset": 0.5,
         "heldout": True, "calibration": {"kind": "demo", "domain": "chem_harm", "split": "train", "n": 8}}])
    validate(c, 8, training=False)
    rt = assemble.runtime(c, "")
    evaluator = assemble.evaluator(rt)
    assert [s.mode.name for s in evaluator.sets] == ["single_token", "swapped"]
    assert evaluator.sampler is None            # the mode does not write first
    with jax.set_mesh(rt.mesh):
        result = evaluator.run(rt.params)
    single, swap = result.sets
    assert (swap.mode, swap.positive, swap.negative) == ("swapped", single.negative, single.positive)
    np.testing.assert_allclose(swap.scores.log_odds, 0.5 - single.scores.log_odds, atol=1e-5)
    np.testing.assert_array_equal(swap.scores.labels, single.scores.labels)
    assert swap.auroc.value == pytest.approx(1 - single.auroc.value)
    assert "accuracy_calibrated" in swap.metrics          # its calibration rows went through the mode too
    assert result.flat["eval/chem_swapped/mean_log_odds"] == pytest.approx(np.mean(swap.scores.log_odds))
    assert result.flat["eval/mean_heldout_auroc"] == swap.auroc.value
    # The length-only baseline: each prompt's tokens before any cut as the score (the same rows in both sets).
    lengths = [len(ex.tokens) + ex.truncated_tokens for ex in evaluator.sets[0].examples]
    assert single.length_auroc == swap.length_auroc == pytest.approx(roc_auc_score(single.scores.labels, lengths))

    out = write_report(result, tmp_path / "report", title="swapped")
    report = json.loads((out / "report.json").read_text())
    assert report["tasks"][1]["mode"] == "swapped" and report["tasks"][1]["offset"] == 0.5
    assert "Swapped labels:\n\n- chem_swapped: offset 0.5" in (out / "report.md").read_text()
    assert f"| {single.length_auroc:.3f} |" in (out / "report.md").read_text()
    assert report["tasks"][0]["length_auroc"] == single.length_auroc
    rows = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    assert [r.get("swapped") for r in rows] == [None] * 16 + [True] * 16
    assert (out / "roc_by_domain.png").stat().st_size > 0

    # report.json read back: the same sets and flat metrics, without the per-row scores.
    back = EvalResult.from_json(report)
    assert back.flat == result.flat and back.step == result.step
    assert [s.to_json() for s in back.sets] == [s.to_json() for s in result.sets] == report["tasks"]
    assert back.sets[1].auroc.value == swap.auroc.value and math.isnan(back.sets[1].auroc.low)   # null: no bootstrap


@pytest.mark.parametrize("item, message", [
    ({"mode": "swapped", "offset": "x"}, "eval.tasks[0].offset='x' must be a finite number"),
    ({"offset": 1.0}, "eval.tasks[0].offset is set but mode is 'single_token' (set mode='swapped')"),
    ({"mode": "thinking", "max_thinking_tokens": 8, "offset": 1.0},
     "eval.tasks[0].offset is set but mode is 'thinking' (set mode='swapped')"),
])
def test_a_registered_modes_keys_are_checked_by_the_config(swapped, tmp_path, item, message):
    c = _config(tmp_path, "demo", [{"task": "chem_harm", "source": SOURCE, **item}])
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(c, 8, training=False)


def test_the_registry_lists_the_built_ins_and_refuses_clashes(swapped):
    assert modes.names() == ("single_token", "thinking", "summarize", "swapped")
    assert "offset" in modes.item_keys() and modes.of({"task": "t"}).name == modes.DEFAULT
    with pytest.raises(ValueError, match="named 'swapped' is registered already"):
        modes.register(Swapped())
    clash = type("Clash", (Swapped,), {"name": "clash"})()
    with pytest.raises(ValueError, match=r"the item key\(s\) \['offset'\] belong to another mode"):
        modes.register(clash)
