"""Summarization transfer: the monitor summarizes, a judge scores the summary alone."""
import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

from monitor_jax.data import demo, research
from monitor_jax.data.encode import ClassificationEncoder
from monitor_jax.data.tasks import TaskError
from monitor_jax.eval.evaluator import Evaluator, make_eval_set
from monitor_jax.eval.scoring import Scorer
from monitor_jax.eval.summarize import Judge, SummaryEncoder
from monitor_jax.generate import Sampler
from monitor_jax.model import create_model
from monitor_jax.model.tokenizer import load_tokenizer
from monitor_jax.parallel import make_mesh
from tests.train_helpers import tiny_config

SUMMARIZE = research.SUMMARY_TASKS["control_arena_summary"]
JUDGE_TASK = research.SUMMARY_TASKS["control_arena_summary_judge"]


@pytest.fixture(scope="module")
def setup(demo_tokenizer):
    tok = load_tokenizer(demo_tokenizer)
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    monitor, judge_model = (create_model(tiny_config(tok.vocab_size), mesh=mesh, seed=seed) for seed in (1, 2))
    judge_graphdef, judge_params = nnx.split(judge_model)
    judge = Judge(judge_params, Scorer(judge_graphdef, mesh, 4, (128, 256), tok.pad_id), tok, "judge (seed 2)")
    return tok, mesh, monitor, judge_model, judge


def test_the_judge_prompt_may_use_the_summary_only(setup):
    tok, _, _, _, judge = setup
    reads_input = dataclasses.replace(JUDGE_TASK, name="peeking_judge", messages=(
        ("user", "Transcript:\n{text}\n\nSummary:\n{summary}\n\nDangerous? Answer Yes or No."),))
    with pytest.raises(TaskError, match=r"must use exactly the field \{summary\}.*not \['summary', 'text'\]"):
        SummaryEncoder(SUMMARIZE, tok, 128, reads_input, judge, max_summary_tokens=16)


def test_judge_scores_the_summaries_and_they_join_back_to_their_rows(setup):
    tok, mesh, monitor, judge_model, judge = setup
    rows = demo.demo_rows("control_arena", "test", n=6)
    enc = SummaryEncoder(SUMMARIZE, tok, 128, JUDGE_TASK, judge, max_summary_tokens=12)
    graphdef, params = nnx.split(monitor)
    sampler = Sampler(graphdef, monitor.cfg, tok, mesh, batch_size=4, max_prompt_length=128, max_new_tokens=12)
    monitor_scorer = Scorer(graphdef, mesh, 4, (128, 256), tok.pad_id)
    with jax.set_mesh(mesh):
        result = Evaluator([make_eval_set("agent_summary", SUMMARIZE, True, rows, enc)], monitor_scorer,
                           sampler=sampler).run(params)
    t = result.sets[0]
    assert t.mode == "summarize" and t.extras["judge"] == "judge (seed 2)" and len(t.scores.extras["summary"]) == 6
    assert list(t.scores.labels) == [int(r["label"]) for r in rows]
    # Row i's score is the judge's log-odds over row i's summary alone (scored here by hand).
    judge_enc = ClassificationEncoder(JUDGE_TASK, tok, 256)
    for i, (row, summary) in enumerate(zip(rows, t.scores.extras["summary"])):
        ids = np.asarray([judge_enc({"summary": summary, "label": row["label"]}).tokens])
        logits = np.asarray(judge_model(ids, np.ones_like(ids)))[0, -1]
        np.testing.assert_allclose(t.scores.log_odds[i], logits[judge_enc.positive_id] - logits[judge_enc.negative_id],
                                   atol=1e-4, err_msg=f"row {i}")


@pytest.mark.parametrize("change, message", [
    (dict(judge_task=""), "eval.tasks[6]: summarize mode needs judge_task"),
    (dict(max_summary_tokens=-1), "eval.tasks[6].max_summary_tokens=-1: summarize mode needs a positive integer"),
    (dict(max_thinking_tokens=8), "eval.tasks[6].max_thinking_tokens is set but mode is 'summarize'"),
])
def test_summarize_items_are_checked_by_key(change, message):
    import re
    import runpy
    from pathlib import Path

    from monitor_jax.config import validate
    from monitor_jax.errors import ConfigError

    c = runpy.run_path(str(Path(__file__).resolve().parents[1] / "configs/paper/thinking_demo.py"))["get_config"]()
    assert c.eval.tasks[6]["mode"] == "summarize"
    with c.unlocked():
        c.eval.tasks[6] = {**c.eval.tasks[6], **change}
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(c, 8, training=False)
