"""The research's tasks (data/research.py) and `data_root`: the same configs on the demo rows or on files."""
import runpy
from pathlib import Path

import numpy as np
import pytest

from monitor_jax.config import ConfigError, validate
from monitor_jax.data import demo, research, tasks
from monitor_jax.data.sources import DataError, JsonlSource, SubsetSource, open_source

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """The demo suite written as the documented file layout, DATA_ROOT/DOMAIN/SPLIT.jsonl."""
    return str(demo.write_demo_jsonl(tmp_path_factory.mktemp("research_data")))


def test_every_domain_has_its_prompt_variants():
    for domain in research.DOMAINS:
        base = tasks.get(domain)
        row_pos, row_neg = {"text": "t", "label": 1}, {"text": "t", "label": 0}
        for variant, flips in (("_paraphrased", False), ("_inverted", True), ("_thinking", False)):
            other = tasks.get(domain + variant)
            assert other.domain == base.domain and other.fields == base.fields == ["text"]
            assert other.chat(row_pos) != base.chat(row_pos), domain + variant
            assert other.label_of(row_pos) == (not flips) and other.label_of(row_neg) == flips
        # The inverted question reads the other way round, and the same booleans work as labels.
        assert tasks.get(domain + "_inverted").label_of({"text": "t", "label": True}) is False
    assert tasks.get(research.INSTRUCTION) is research.INSTRUCTION_TASK


def test_the_demo_prompts_are_the_research_prompts():
    """The demo tokenizer is trained on exactly these (renaming the domains changed no prompt)."""
    assert set(demo.TOKENIZER_TASKS) <= set(research.TASKS)
    assert demo.DOMAINS == research.DOMAINS


def test_a_research_source_reads_the_demo_rows_without_a_data_root_and_the_files_with_one(data_root):
    for domain in (*research.DOMAINS, research.INSTRUCTION):
        spec = {"kind": "research", "domain": domain, "split": "test", "n": None}
        from_demo, from_files = open_source(spec), open_source(spec, data_root)
        assert isinstance(from_files, JsonlSource)
        assert len(from_demo) == len(from_files)
        assert [from_demo[i] for i in range(len(from_demo))] == [from_files[i] for i in range(len(from_files))]
        assert from_files.describe(2).endswith(f"{domain}/test.jsonl line 3")


def test_n_on_a_file_is_a_seeded_subset_in_file_order(data_root):
    spec = {"kind": "research", "domain": "imdb", "split": "test", "n": 40}
    a, b = open_source(spec, data_root), open_source(spec, data_root)
    assert isinstance(a, SubsetSource) and len(a) == 40
    assert [a[i] for i in range(40)] == [b[i] for i in range(40)]
    full = open_source({**spec, "n": None}, data_root)
    ids = [full[i]["id"] for i in range(len(full))]
    positions = [ids.index(a[i]["id"]) for i in range(40)]
    assert positions == sorted(positions) and positions[-1] > 40    # spread over the file, order kept
    other = open_source({**spec, "seed": 1}, data_root)
    assert [other[i]["id"] for i in range(40)] != [a[i]["id"] for i in range(40)]
    assert a.describe(0) == full.describe(positions[0])
    with pytest.raises(DataError, match=r"imdb/test.jsonl has 1000 rows; n=1001 asks for more"):
        open_source({**spec, "n": 1001}, data_root)


def _demo_config():
    return runpy.run_path(str(REPO / "configs/demo.py"))["get_config"]()


def test_the_demo_config_trains_on_the_same_batches_from_files(data_root, demo_tokenizer):
    from monitor_jax import assemble
    from monitor_jax.model.tokenizer import load_tokenizer

    tok = load_tokenizer(demo_tokenizer)
    c = _demo_config()
    c.train.batch_size, c.train.steps = 16, 4
    c.data.max_length = 128
    on_demo = assemble.train_data(c, tok)
    c.data_root = data_root
    validate(c, 8)
    on_files = assemble.train_data(c, tok)
    for step in range(3):
        a, b = on_demo[step], on_files[step]
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"step {step} {key}")


@pytest.mark.parametrize("change, message", [
    (lambda c, root: setattr(c, "data_root", root + "/nowhere"), "data_root='{root}/nowhere' is not a directory"),
    (lambda c, root: c.eval.tasks[0]["source"].update(split="valid"),
     "eval.tasks[0].source: {root}/chem_harm/valid.jsonl does not exist"),
    (lambda c, root: c.data.classification[1]["source"].update(domain="bio_harm"),
     "data.classification[1].source: {root}/bio_harm/train.jsonl does not exist"),
    (lambda c, root: c.data.classification[0]["source"].pop("split"),
     "data.classification[0].source: a research source needs domain and split"),
])
def test_data_root_problems_are_config_errors_naming_the_key(data_root, change, message):
    c = _demo_config()
    c.data_root = data_root
    change(c, data_root)
    with pytest.raises(ConfigError, match=message.format(root=data_root).replace("[", r"\[").replace("]", r"\]")):
        validate(c, 8)


def test_a_data_root_no_source_reads_is_an_error(data_root):
    c = _demo_config()
    c.data.classification = [{"task": "chem_harm", "source": {"kind": "demo", "domain": "chem_harm", "split": "train"}}]
    c.data.instruction, c.data.mixing = {}, {"kind": "constant", "value": 1.0}
    c.train.best_metric = ""
    c.eval.tasks = [{"task": "chem_harm", "source": {"kind": "demo", "domain": "chem_harm", "split": "test", "n": 20}}]
    validate(c, 8)
    c.data_root = data_root
    with pytest.raises(ConfigError, match="is set but no source reads it"):
        validate(c, 8)


@pytest.mark.parametrize("on_files", [False, True])
def test_every_paper_config_validates_at_every_grid_point(data_root, on_files):
    """Each configs/paper/*.py at every grid point, on the demo rows and on the documented files."""
    from monitor_jax.config import set_key, sweep_grid
    from monitor_jax.studies.sweep import expand

    for path in sorted((REPO / "configs/paper").glob("*.py")):
        c = runpy.run_path(str(path))["get_config"]()
        c.data_root = data_root if on_files else ""
        training = not path.name.startswith("elicitation")
        validate(c, 1, training=training)
        if c.sweep.grid or c.sweep.seeds:
            for run in expand(*sweep_grid(c)[:1], list(c.sweep.seeds), sweep_grid(c)[1]):
                point = c.copy_and_resolve_references()
                for key, value in run.overrides.items():
                    set_key(point, key, value)
                validate(point, 1)
