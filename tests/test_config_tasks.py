"""Tasks written in a config (`tasks`): built and checked like registered tasks, errors naming the key."""
import re
import runpy
from pathlib import Path

import jax
import numpy as np
import pytest

from monitor_jax import assemble
from monitor_jax.config import inline_tasks, validate
from monitor_jax.data import research
from monitor_jax.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
CHEM = research.TASKS["chem_harm"]


def _spec(**changes):
    """The demo's chem_harm task written as config data."""
    return {"name": "chem_inline", "domain": "chem_harm", "messages": [list(m) for m in CHEM.messages],
            "positive": "Yes", "negative": "No", "label_field": "label",
            "labels": [[True, True], [False, False], [1, True], [0, False]],
            **changes}


def _config(tmp_path, tokenizer, *specs):
    c = runpy.run_path(str(REPO / "configs/demo.py"))["get_config"]()
    c.workdir = str(tmp_path)
    c.model.tokenizer = str(tokenizer)
    c.tasks = list(specs)
    return c


def test_a_config_task_scores_exactly_like_the_registered_one(tmp_path, demo_tokenizer):
    c = _config(tmp_path, demo_tokenizer, _spec())
    source = {"kind": "demo", "domain": "chem_harm", "split": "test", "n": 24}
    c.eval.tasks = [{"task": "chem_harm", "source": source}, {"task": "chem_inline", "source": source}]
    c.eval.batch_size, c.eval.bootstrap = 8, 20
    validate(c, jax.device_count(), training=False)
    inline = assemble.task(c, "chem_inline")
    assert (inline.messages, inline.labels, inline.positive, inline.domain) == (
        CHEM.messages, CHEM.labels, CHEM.positive, CHEM.domain)
    loaded = assemble.runtime(c, "")
    evaluator = assemble.evaluator(loaded, check_label_mass=False)
    with jax.set_mesh(loaded.mesh):
        registered, written = evaluator.run(loaded.params).sets
    np.testing.assert_array_equal(registered.scores.log_odds, written.scores.log_odds)
    np.testing.assert_array_equal(registered.scores.labels, written.scores.labels)
    assert registered.auroc == written.auroc
    assert [e.tokens.tolist() for e in evaluator.sets[0].examples] == [e.tokens.tolist()
                                                                      for e in evaluator.sets[1].examples]


@pytest.mark.parametrize("change, message", [
    (dict(messages=[["system", "You are a monitor."], ["user", "Is this harmful? {} Answer Yes or No."]]),
     "tasks[0].messages[1]: the slot {} names no row field"),
    (dict(messages=[["user", "Is {text.upper} harmful?"]]), "tasks[0].messages[0]: the slot {text.upper} names no"),
    (dict(messages=[["user", "Is {text harmful?"]]), "tasks[0].messages[0]: expected '}' before end of string"),
    (dict(messages=[["monitor", "Is {text} harmful?"]]), "tasks[0].messages[0]: role 'monitor'; choose one of"),
    (dict(messages=[["user", "Is this harmful?"]]), "tasks[0].messages: the prompt has no {field} slot"),
    (dict(labels=[[1, True]]), "tasks[0].labels=[[1, True]] must map some row value to each of true and false"),
    (dict(negative="Yes"), "tasks[0]: task chem_inline: positive and negative labels are both 'Yes'"),
    (dict(positve="Yes"), "tasks[0] has unknown key(s) ['positve']; a classification task takes"),
    (dict(kind="regression"), "tasks[0].kind='regression'; choose one of ['classification', 'instruction']"),
    (dict(name=""), "tasks[0].name='' must be a non-empty string"),
])
def test_a_bad_config_task_is_a_config_error_naming_the_key(tmp_path, demo_tokenizer, change, message):
    c = _config(tmp_path, demo_tokenizer, _spec(**change))
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(c, jax.device_count(), training=False)


def test_a_multi_token_label_is_named_when_the_tokenizer_is_known(tmp_path, demo_tokenizer):
    c = _config(tmp_path, demo_tokenizer, _spec(positive="Absolutely harmful"))
    validate(c, jax.device_count(), training=False)
    with pytest.raises(ConfigError, match=re.escape("tasks[0].positive/negative: task chem_inline: label "
                                                    "'Absolutely harmful' is not one token after the prompt")):
        assemble.tokenizer(c)


def test_names_must_be_new(tmp_path, demo_tokenizer):
    c = _config(tmp_path, demo_tokenizer, _spec(), _spec())
    with pytest.raises(ConfigError, match=re.escape("tasks[1].name='chem_inline' is given to another item")):
        validate(c, jax.device_count(), training=False)
    c = _config(tmp_path, demo_tokenizer, _spec(name="chem_harm"))
    with pytest.raises(ConfigError, match=re.escape("tasks: ['chem_harm'] are registered tasks already")):
        assemble.task(c, "chem_harm")


def test_an_instruction_task_and_a_thinking_task_from_config(tmp_path, demo_tokenizer):
    thinking = research.THINKING_TASKS["chem_harm_thinking"]
    c = _config(tmp_path, demo_tokenizer, {"name": "chat", "kind": "instruction", "messages_field": "messages"},
                _spec(name="chem_think", messages=[list(m) for m in thinking.messages], positive=" Yes",
                      negative=" No", answer_marker="Answer:"))
    tasks = inline_tasks(c)
    assert tasks["chat"] == research.INSTRUCTION_TASK.__class__(name="chat")
    assert tasks["chem_think"].answer_marker == "Answer:"
    assemble.tokenizer(c)          # " Yes" / " No" are single tokens after the marker
