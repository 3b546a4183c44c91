"""Each config key has one home: a field of the settings dataclass beside the code that reads it."""
import ast
import dataclasses
from pathlib import Path

import pytest

from monitor_jax import config, settings
from monitor_jax.config import ConfigError, SECTIONS, base_config, section, validate
from monitor_jax.settings import setting
from monitor_jax.train.step import LossConfig

PACKAGE = Path(config.__file__).resolve().parent


def test_every_key_of_base_config_comes_from_exactly_one_declaration():
    c = base_config()
    declared = []
    for prefix, cls in SECTIONS.items():
        names = [f.name for f in settings.fields(cls)]
        assert names, f"section {prefix!r} declares no settings"
        declared += [f"{prefix}.{n}" if prefix else n for n in names]
    assert len(declared) == len(set(declared))
    keys = [k for k in c if k not in SECTIONS] + [f"{p}.{k}" for p in SECTIONS if p for k in c[p]]
    assert sorted(keys) == sorted(declared)
    for prefix, cls in SECTIONS.items():
        for f in settings.fields(cls):
            value = c[prefix][f.name] if prefix else c[f.name]
            assert (value.to_dict() if hasattr(value, "to_dict") else value) == f.default, (prefix, f.name)
            assert f.doc and not f.doc.endswith("."), (prefix, f.name)


def test_config_py_writes_no_default_of_its_own():
    """No key is assigned a default in config.py: base_config() builds every section from its declaration."""
    tree = ast.parse((PACKAGE / "config.py").read_text())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "base_config")
    assigned = [n for n in ast.walk(fn) if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Attribute)]
    assert assigned == []


def test_a_field_added_to_a_dataclass_appears_as_a_key_with_its_range_check():
    @dataclasses.dataclass(frozen=True)
    class Extended(LossConfig):
        label_smoothing: float = setting(0.0, "mass moved from the label to the other token", low=0.0, high=0.5)

    sections = dict(SECTIONS, loss=Extended)
    c = base_config(sections)
    assert c.loss.label_smoothing == 0.0
    c.loss.label_smoothing = 0.7
    with pytest.raises(ConfigError, match=r"loss.label_smoothing=0.7 must be in \[0.0, 0.5\]"):
        config._check_ranges(c, sections)
    c.loss.label_smoothing = 0.1
    config._check_ranges(c, sections)
    assert settings.build(Extended, c.loss).label_smoothing == 0.1
    assert "`loss.label_smoothing`" in settings.doc_table(sections)
    with pytest.raises(AttributeError):   # the config stays locked: a misspelt key is still an error
        c.loss.label_smoothin = 0.2


@pytest.mark.parametrize("key, value, message", [
    ("optim.b1", 1.5, "optim.b1=1.5 must be in [0.0, 1.0]"),
    ("train.steps", 0, "train.steps=0 must be >= 1"),
    ("optim.lr", float("inf"), "optim.lr=inf must be a finite number"),
    ("loss.normalization", "mean", "loss.normalization='mean'; choose one of ('per_source', 'pooled')"),
    ("eval.buckets", (128, 0), "eval.buckets=(128, 0) must be positive prompt lengths"),
    ("generate.top_p", 0.0, "generate.top_p=0.0 must be in [1e-09, 1.0]"),
    ("model.remat", "some", "model.remat='some'; choose one of ('none', 'full', 'dots', 'dots_no_batch')"),
])
def test_each_declared_range_is_checked_and_named(key, value, message):
    c = base_config()
    c.model.config = {"family": "llama", "embed_dim": 8, "num_layers": 1, "num_heads": 1, "num_kv_heads": 1,
                      "head_dim": 8, "mlp_dim": 8}
    c.model.tokenizer = "demo"
    config.set_key(c, key, value)
    with pytest.raises(ConfigError) as e:
        validate(c, num_devices=1, training=False)
    assert str(e.value) == message


def test_library_code_gets_its_section_as_the_declaring_dataclass():
    c = base_config()
    c.loss.chunk_size = 64
    loss = section(c, "loss", instruction=False, num_tasks=2)
    assert isinstance(loss, LossConfig) and (loss.chunk_size, loss.instruction, loss.num_tasks) == (64, False, 2)
    assert loss.cls_weight == {"kind": "constant", "value": 1.0} and isinstance(loss.cls_weight, dict)
    assert section(c, "model").overrides()["attention"] == "flash"


def test_docs_settings_md_lists_every_key():
    """docs/settings.md holds the table generated from the declarations (the command is in its header)."""
    text = (PACKAGE.parent / "docs" / "settings.md").read_text()
    assert settings.doc_table(SECTIONS) in text
