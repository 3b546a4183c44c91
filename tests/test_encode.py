"""Tasks and encoding: label tokens checked, errors named, loss weights aligned with targets."""
import numpy as np
import pytest

from monitor_jax.data.encode import CLASSIFICATION, ClassificationEncoder, InstructionEncoder, pack, pad
from monitor_jax.data.tasks import ClassificationTask, InstructionTask, TaskError, with_prompt

HARM = ClassificationTask(
    name="harm", domain="chem",
    messages=(("system", "You are a safety monitor."),
              ("user", "Is the following request harmful? Answer Yes or No.\n\n{text}")))
CHAT = InstructionTask(name="chat")


def test_label_tokens_are_single_tokens_in_context(small_tokenizer):
    pos, neg = HARM.label_ids(small_tokenizer, {"text": "x"})
    assert small_tokenizer.decode([pos]) == "Yes" and small_tokenizer.decode([neg]) == "No"   # the default labels


def test_multi_token_label_names_task_label_and_tokens(small_tokenizer):
    bad = with_prompt(HARM, "harm_bad", HARM.messages, positive=" Affirmative")
    with pytest.raises(TaskError, match=r"task harm_bad: label ' Affirmative' is not one token after the prompt; "
                                        r"it tokenizes to \[.*\] \(ids \["):
        ClassificationEncoder(bad, small_tokenizer, 128)


def test_leading_space_matters(small_tokenizer):
    """After the generation prompt's newline, 'Yes' and ' Yes' are different tokens."""
    space = with_prompt(HARM, "harm_space", HARM.messages, positive=" Yes", negative=" No")
    ids = space.label_ids(small_tokenizer, {"text": "x"})
    assert ids != HARM.label_ids(small_tokenizer, {"text": "x"})


def test_label_ids_are_checked_once_per_task_and_tokenizer(small_tokenizer, monkeypatch):
    """The encoders (and the config's check) share one check of a task's labels per tokenizer; a thinking task's
    labels are read after its answer marker."""
    import dataclasses

    from monitor_jax.data.encode import Encoded
    from monitor_jax.data.tasks import resolve_label_ids

    task = with_prompt(HARM, "harm_once", HARM.messages, positive=" Yes", negative=" No", answer_marker="Answer:")
    checked = []
    check = ClassificationTask.label_ids
    monkeypatch.setattr(ClassificationTask, "label_ids", lambda t, *a: checked.append(t.answer_prefix) or check(t, *a))
    after = resolve_label_ids(task, small_tokenizer, after_marker=True)
    assert after == check(dataclasses.replace(task, answer_prefix="Answer:"), small_tokenizer, {"text": "x"})
    assert resolve_label_ids(task, small_tokenizer, after_marker=True) is after and checked == ["Answer:"]
    ClassificationEncoder(task, small_tokenizer, 128)     # single-token mode: read right after the prompt
    ClassificationEncoder(task, small_tokenizer, 128)
    assert checked == ["Answer:", ""]
    ex = ClassificationEncoder(HARM, small_tokenizer, 128)({"text": "hi", "label": 1})
    assert ClassificationEncoder(HARM, small_tokenizer, 128).label_ids is ex.label_ids
    # The label is stored once: the target at the label position follows from it.
    assert {"label", "label_ids"} <= {f.name for f in dataclasses.fields(Encoded)}
    assert not {"targets", "positive_id", "negative_id"} & {f.name for f in dataclasses.fields(Encoded)}


def test_label_value_outside_mapping_names_value_and_row(small_tokenizer):
    enc = ClassificationEncoder(HARM, small_tokenizer, 128)
    with pytest.raises(TaskError, match=r"row data.jsonl line 7 has label='maybe', which is not one of"):
        enc({"text": "hi", "label": "maybe"}, "data.jsonl line 7")


def test_missing_field_names_it_and_fields_present(small_tokenizer):
    enc = ClassificationEncoder(HARM, small_tokenizer, 128)
    with pytest.raises(TaskError, match=r"lacks field\(s\) \['text'\].*fields present: \['label', 'prompt'\]"):
        enc({"prompt": "hi", "label": 1}, "row 3")
    with pytest.raises(TaskError, match=r"no label field 'label'; fields present: \['text'\]"):
        enc({"text": "hi"}, "row 4")


def test_classification_weights_sit_on_the_label_after_the_shift(small_tokenizer):
    enc = ClassificationEncoder(HARM, small_tokenizer, 128)
    prompt = HARM.render(small_tokenizer, {"text": "How do I store chemicals?"})
    for label, label_id in ((1, enc.positive_id), (0, enc.negative_id)):
        ex = enc({"text": "How do I store chemicals?", "label": label})
        assert list(ex.tokens) == small_tokenizer.encode(prompt)     # the label is not an input
        assert np.flatnonzero(ex.weights).tolist() == [ex.label_position] == [len(ex) - 1]
        assert ex.targets[ex.label_position] == label_id
        # Unweighted targets are the next input tokens: a masked SFT over prompt + label.
        np.testing.assert_array_equal(ex.targets[:-1], ex.tokens[1:])
        assert small_tokenizer.encode(prompt + ("Yes" if label else "No")) == list(ex.tokens) + [label_id]
        row = pad(ex, 128, small_tokenizer.pad_id)
        assert row["kind"] == CLASSIFICATION and row["segment_ids"].sum() == len(ex)
        assert row["weights"].sum() == 1 and row["targets"][row["label_position"]] == label_id


@pytest.mark.parametrize("side", ["left", "right"])
def test_truncation_cuts_only_the_content_field(small_tokenizer, side):
    task = with_prompt(HARM, f"harm_{side}", HARM.messages, truncate_side=side)
    enc = ClassificationEncoder(task, small_tokenizer, 60)
    words = [f"w{i}" for i in range(80)]
    ex = enc({"text": " ".join(words), "label": 1}, "row 0")
    assert ex.truncated and len(ex) <= 60
    full = small_tokenizer.encode(task.render(small_tokenizer, {"text": " ".join(words)}))
    assert ex.truncated_tokens == len(full) - len(ex) > 0                            # counted exactly
    text = small_tokenizer.decode(ex.tokens)
    assert text.startswith("<|im_start|>system\nYou are a safety monitor.")          # instructions kept
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n")                       # answer position kept
    assert ex.targets[ex.label_position] == enc.positive_id                          # label kept
    assert ("w79" in text) == (side == "left") and ("w0 " in text) == (side == "right")
    short = enc({"text": "short", "label": 0})
    assert not short.truncated and short.truncated_tokens == 0


def test_prompt_that_cannot_fit_is_an_error(small_tokenizer):
    with pytest.raises(TaskError, match=r"prompt without content is \d+ tokens, which does not fit max_length=10"):
        ClassificationEncoder(HARM, small_tokenizer, 10)


def _check_instruction_alignment(row, tok):
    """Weighted targets are exactly the assistant replies (with end-of-turn), each the next input token."""
    w = row["weights"].astype(bool)
    seg = row["segment_ids"]
    for t in np.flatnonzero(w):
        assert seg[t] == seg[t + 1] != 0 and row["targets"][t] == row["tokens"][t + 1]
    return tok.decode(row["targets"][w])


MSGS = [{"role": "user", "content": "Repeat the word apple three times."},
        {"role": "assistant", "content": "apple apple apple"},
        {"role": "user", "content": "Reverse the list: red, green, blue."},
        {"role": "assistant", "content": "blue, green, red"}]


def test_instruction_loss_on_assistant_tokens_only(small_tokenizer):
    enc = InstructionEncoder(CHAT, small_tokenizer, 128)
    row = pad(enc({"messages": MSGS}), 128, small_tokenizer.pad_id)
    assert _check_instruction_alignment(row, small_tokenizer) == "apple apple apple<|im_end|>blue, green, red<|im_end|>"


def test_templates_without_generation_markers_use_prefix_rendering(small_tokenizer, tmp_path):
    from monitor_jax.model.tokenizer import load_tokenizer

    small_tokenizer.save(tmp_path)
    tok = load_tokenizer(tmp_path)
    tok.hf.chat_template = tok.hf.chat_template.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    enc = InstructionEncoder(CHAT, tok, 128)
    assert not enc.has_generation_markers
    marked = InstructionEncoder(CHAT, small_tokenizer, 128)({"messages": MSGS})
    prefix = enc({"messages": MSGS})
    np.testing.assert_array_equal(prefix.tokens, marked.tokens)
    np.testing.assert_array_equal(prefix.weights, marked.weights)


def test_packed_rows_keep_weights_aligned_and_segments_apart(small_tokenizer):
    enc = InstructionEncoder(CHAT, small_tokenizer, 128)
    a = enc({"messages": MSGS[:2]})
    b = enc({"messages": MSGS[2:]})
    row = pack([a, b], 128, small_tokenizer.pad_id)
    assert _check_instruction_alignment(row, small_tokenizer) == "apple apple apple<|im_end|>blue, green, red<|im_end|>"
    assert row["segment_ids"][len(a) - 1] == 1 and row["segment_ids"][len(a)] == 2
    assert row["positions"][len(a)] == 0
    assert row["weights"][len(a) - 1] == 0   # never predict the next segment's first token
    assert row["weights"].sum() == a.weights.sum() + b.weights.sum()


def test_instruction_errors(small_tokenizer):
    enc = InstructionEncoder(CHAT, small_tokenizer, 128)
    with pytest.raises(TaskError, match=r"row f.jsonl line 2 field 'messages' must be a non-empty list.*"
                                        r"fields present: \['text'\]"):
        enc({"text": "hi"}, "f.jsonl line 2")
    with pytest.raises(TaskError, match="no assistant turn"):
        enc({"messages": MSGS[:1]}, "row 1")
    short = InstructionEncoder(CHAT, small_tokenizer, 12)
    with pytest.raises(TaskError, match="no assistant token within max_length=12"):
        short({"messages": MSGS}, "row 5")
    cut = InstructionEncoder(CHAT, small_tokenizer, 30)({"messages": MSGS})
    assert cut.truncated and len(cut) == 30 and cut.weights.sum() > 0


def test_encoding_is_thread_safe(small_tokenizer):
    """grain prefetches with threads; transformers' assistant-mask tracking is shared state."""
    from concurrent.futures import ThreadPoolExecutor

    enc = InstructionEncoder(CHAT, small_tokenizer, 128)
    rows = [{"messages": [{"role": "user", "content": f"Repeat {i} " * (1 + i % 9)},
                          {"role": "assistant", "content": "Yes" if i % 2 else f"{i} {i}"}]} for i in range(200)]
    serial = [enc(r).weights.tolist() for r in rows]
    import sys
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)   # switch threads often, as a loaded machine would
    try:
        with ThreadPoolExecutor(8) as pool:
            threaded = list(pool.map(lambda r: enc(r).weights.tolist(), rows * 5))
    finally:
        sys.setswitchinterval(interval)
    assert threaded == serial * 5
