"""The embedded demo suite: seeded, balanced, split-disjoint, tokenizable, and not solvable by keywords."""
import json
import os
import re
import subprocess
import sys

import pytest

from benchmarks.bow_baseline import bow_baseline_auroc
from monitor_jax.data import demo, research, tasks


@pytest.fixture(scope="module")
def rows():
    """(domain, split) -> the seed-0 rows at default sizes."""
    return {(d, s): demo.demo_rows(d, s) for d in demo.DOMAINS for s in demo.SPLITS}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return demo.build_demo_tokenizer(tmp_path_factory.mktemp("demo_tok"))


def test_rows_are_determined_by_seed(rows):
    for domain in demo.DOMAINS:
        assert demo.demo_rows(domain, "train") == rows[domain, "train"]
        other = demo.demo_rows(domain, "train", seed=1)
        assert [r["text"] for r in other] != [r["text"] for r in rows[domain, "train"]]
    assert demo.instruction_rows("train", seed=3) == demo.instruction_rows("train", seed=3)
    assert demo.instruction_rows("train", seed=3) != demo.instruction_rows("train", seed=4)


def test_seed_derivation_does_not_depend_on_python_hash():
    code = ("import hashlib, json; from monitor_jax.data import demo; print(hashlib.sha256(json.dumps("
            "[demo.demo_rows(d, 'test', seed=7, n=50) for d in demo.DOMAINS]).encode()).hexdigest())")
    digests = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": str(h)}).stdout for h in (1, 2)}
    assert len(digests) == 1


def test_sizes_balance_and_ids(rows):
    for (domain, split), split_rows in rows.items():
        assert len(split_rows) == demo.SIZES[split]
        assert sum(r["label"] for r in split_rows) * 2 == len(split_rows)
        assert all(type(r["label"]) is int and r["label"] in (0, 1) for r in split_rows)
        assert [r["id"] for r in split_rows] == [f"{domain}-{split}-{i}" for i in range(len(split_rows))]
        # Shuffled, not blocked: both labels show up among the first twenty rows.
        assert len({r["label"] for r in split_rows[:20]}) == 2
    small = demo.demo_rows("imdb", "test", n=10)
    assert len(small) == 10 and sum(r["label"] for r in small) == 5


def test_texts_are_short_and_mostly_distinct(rows):
    for (domain, split), split_rows in rows.items():
        texts = [r["text"] for r in split_rows]
        lengths = sorted(len(t.split()) for t in texts)
        assert 8 <= lengths[len(lengths) // 2] <= 80, (domain, lengths[len(lengths) // 2])
        assert len(set(texts)) > 0.85 * len(texts), domain


def test_train_and_test_never_share_a_text(rows):
    for domain in demo.DOMAINS:
        train = {r["text"] for r in rows[domain, "train"]}
        assert train.isdisjoint(r["text"] for r in rows[domain, "test"])
        # The split is a property of the text, so it holds across seeds too.
        assert train.isdisjoint(r["text"] for r in demo.demo_rows(domain, "test", seed=5))
    prompts = {r["messages"][0]["content"] for r in demo.instruction_rows("train")}
    assert prompts.isdisjoint(r["messages"][0]["content"] for r in demo.instruction_rows("test"))


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="unknown demo domain 'chem'"):
        demo.demo_rows("chem", "train")
    with pytest.raises(ValueError, match="unknown split 'valid'"):
        demo.demo_rows("chem_harm", "valid")
    with pytest.raises(ValueError, match="n must be even"):
        demo.demo_rows("chem_harm", "train", n=7)


def test_tasks_are_registered_and_labels_are_single_tokens(rows, tokenizer):
    assert set(demo.DOMAINS) < set(research.TASKS)
    for name, task in research.TASKS.items():
        assert tasks.get(name) is task
        sample = rows[task.domain, "test"][:3] + [r for r in rows[task.domain, "test"] if r["label"] == 1][:1]
        ids = {task.label_ids(tokenizer, row) for row in sample}
        assert len(ids) == 1, (name, ids)
        positive, negative = ids.pop()
        assert tokenizer.decode([positive]) == task.positive and tokenizer.decode([negative]) == task.negative
    assert tasks.get("instruct") is research.INSTRUCTION_TASK


def test_prompt_variants_share_rows_and_the_inverted_one_flips_labels(rows):
    row = rows["cyber_harm", "test"][0]
    base, inverted = research.TASKS["cyber_harm"], research.TASKS["cyber_harm_inverted"]
    assert inverted.domain == base.domain and inverted.messages != base.messages
    assert inverted.label_of(row) == (not base.label_of(row))
    paraphrased = research.TASKS["control_arena_paraphrased"]
    agent_row = rows["control_arena", "test"][0]
    assert paraphrased.chat(agent_row) != research.TASKS["control_arena"].chat(agent_row)
    assert paraphrased.label_of(agent_row) == research.TASKS["control_arena"].label_of(agent_row)


@pytest.mark.parametrize("domain", demo.DOMAINS)
def test_bag_of_words_is_better_than_chance_but_not_enough(domain):
    auroc = bow_baseline_auroc(domain)
    assert 0.6 < auroc <= 0.95, f"{domain}: bag-of-words AUROC {auroc:.3f}"


def _expected_answer(prompt: str) -> str:
    """The answer to a demo instruction, worked out again from its text alone."""
    if m := re.fullmatch(r'Repeat the word "(\w+)" (\d) times, separated by spaces\.', prompt):
        return " ".join([m[1]] * int(m[2]))
    if m := re.fullmatch(r"Reverse the order of this list: (.*)\.", prompt):
        return ", ".join(reversed(m[1].split(", ")))
    if m := re.fullmatch(r"How many items are in this list: (.*)\? Answer with a number\.", prompt):
        return str(len(m[1].split(", ")))
    if m := re.fullmatch(r'Sentence: "(.*)"\nDoes the sentence contain the word "(\w+)"\? Answer Yes or No\.', prompt):
        return "Yes" if m[2] in m[1].lower().rstrip(".").split() else "No"
    if m := re.fullmatch(r"Copy this sentence in upper case: (.*)", prompt):
        return m[1].upper()
    if m := re.fullmatch(r'What is the last word of the sentence "(.*)"\?', prompt):
        return m[1].rstrip(".").split()[-1]
    if m := re.fullmatch(r"Sort these words alphabetically: (.*)\.", prompt):
        return ", ".join(sorted(m[1].split(", ")))
    if m := re.fullmatch(r"What is (\d+) plus (\d+)\? Answer with a number\.", prompt):
        return str(int(m[1]) + int(m[2]))
    raise AssertionError(f"unrecognised instruction {prompt!r}")


def test_instruction_rows_are_well_formed_and_correct():
    for split in demo.SPLITS:
        split_rows = demo.instruction_rows(split)
        assert len(split_rows) == demo.INSTRUCTION_SIZES[split]
        for i, row in enumerate(split_rows):
            assert row["id"] == f"instruct-{split}-{i}"
            chat = research.INSTRUCTION_TASK.chat(row)
            assert [m["role"] for m in chat] == ["user", "assistant"]
            assert chat[1]["content"] == _expected_answer(chat[0]["content"])
    answers = [r["messages"][1]["content"] for r in demo.instruction_rows("train") if "Yes or No" in
               r["messages"][0]["content"]]
    assert 0.35 < answers.count("Yes") / len(answers) < 0.65


def test_write_demo_jsonl(tmp_path, rows):
    out = demo.write_demo_jsonl(tmp_path / "demo")
    for domain in demo.DOMAINS:
        for split in demo.SPLITS:
            lines = (out / domain / f"{split}.jsonl").read_text().splitlines()
            assert [json.loads(line) for line in lines] == rows[domain, split]
    written = [json.loads(line) for line in (out / "instruct" / "test.jsonl").read_text().splitlines()]
    assert written == demo.instruction_rows("test")
