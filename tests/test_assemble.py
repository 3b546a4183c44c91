"""The assembled evaluator and scorer: bootstrap count, the model's sharding rules, unique eval-set names, the
label-mass check against transformers, config.json without `architectures`."""
import json
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from monitor_jax import assemble
from monitor_jax.config import base_config, validate
from monitor_jax.errors import ConfigError
from monitor_jax.eval.report import write_report
from monitor_jax.parallel.sharding import DEFAULT_RULES

REPO = Path(__file__).resolve().parents[1]


def small_config(workdir, tokenizer, **eval_keys):
    sys.path.insert(0, str(REPO))
    from configs.demo import get_config

    c = get_config()
    c.workdir, c.model.tokenizer = str(workdir), tokenizer
    c.model.config = dict(family="llama", embed_dim=32, num_layers=1, num_heads=4, num_kv_heads=2, head_dim=8,
                          mlp_dim=32)
    c.mesh = dict(data=2, fsdp=2, tensor=2)
    c.eval.max_rows, c.eval.bootstrap = 16, 0
    for k, v in eval_keys.items():
        c.eval[k] = v
    return c


def _demo(domain, split, n=None):
    return {"kind": "demo", "domain": domain, "split": split, "n": n}


def build(c, check_label_mass=False):
    rt = assemble.runtime(c)
    ev = assemble.evaluator(rt, check_label_mass)
    return nnx.merge(rt.graphdef, rt.params), ev


def test_the_evaluator_uses_the_configured_bootstrap_count(tmp_path, demo_tokenizer):
    """Before: `run()` ignored the evaluator's `bootstrap`, so eval.bootstrap had no effect inside training."""
    c = small_config(tmp_path, demo_tokenizer, bootstrap=40,
                     tasks=[{"task": "chem_harm", "source": _demo("chem_harm", "test", 16)}])
    model, ev = build(c)
    auroc = ev.run(nnx.state(model, nnx.Param), step=0).sets[0].auroc
    assert np.isfinite(auroc.low) and auroc.low <= auroc.value <= auroc.high
    unbootstrapped = ev.run(nnx.state(model, nnx.Param), step=0, bootstrap=0).sets[0].auroc
    assert np.isnan(unbootstrapped.low) and unbootstrapped.value == auroc.value


def test_the_scorer_shards_by_the_models_own_rules(tmp_path, demo_tokenizer):
    """Before: the evaluator and `score` built the scorer with the default rules, whatever the model's."""
    custom = tuple((name, None if name == "mlp" else axes) for name, axes in DEFAULT_RULES)
    assert custom != DEFAULT_RULES
    c = small_config(tmp_path, demo_tokenizer,
                     tasks=[{"task": "chem_harm", "source": _demo("chem_harm", "test", 16)}])
    c.model.config = dict(c.model.config, sharding_rules=custom)
    model, ev = build(c)
    assert model.cfg.sharding_rules == custom and ev.scorer.rules == custom
    loaded = assemble.runtime(c, "")
    assert loaded.rules == custom
    assert assemble.scorer(loaded).rules == custom


def test_eval_sets_sharing_a_task_get_distinct_names_in_reports_and_metrics(tmp_path, demo_tokenizer):
    """Before: two items with the same task collided in report.json and printed the same row name."""
    rows = tmp_path / "mine.jsonl"
    rows.write_text("".join(json.dumps({"id": i, "text": f"the agent ran rm -rf {i}", "label": i % 2}) + "\n"
                            for i in range(8)))
    items = [{"task": "control_arena", "source": _demo("control_arena", "test", 16), "heldout": True},
             {"task": "control_arena", "source": {"kind": "jsonl", "path": str(rows)}, "heldout": True},
             {"task": "control_arena", "source": _demo("control_arena", "train", 16), "name": "agents_train"}]
    c = small_config(tmp_path, demo_tokenizer, tasks=items)
    validate(c, 8, training=False)
    model, ev = build(c)
    result = ev.run(nnx.state(model, nnx.Param), step=0)
    assert [t.name for t in result.sets] == ["control_arena", "control_arena#2", "agents_train"]
    assert [t.n for t in result.sets] == [16, 8, 16]
    assert {"eval/control_arena/auroc", "eval/control_arena#2/auroc", "eval/agents_train/auroc"} <= set(result.flat)
    out = write_report(result, tmp_path / "report", title="t")
    report = json.loads((out / "report.json").read_text())
    assert [t["name"] for t in report["tasks"]] == ["control_arena", "control_arena#2", "agents_train"]
    md = (out / "report.md").read_text()
    assert "| control_arena | " in md and "| control_arena#2 | " in md and "| agents_train | " in md
    c.eval.tasks = items + [dict(items[2])]
    with pytest.raises(ConfigError, match=r"the name\(s\) \['agents_train'\] are given to several items"):
        validate(c, 8, training=False)


def test_label_mass_is_reported_matches_transformers_and_warns_for_a_pretrained_model(tmp_path, demo_tokenizer,
                                                                                       caplog):
    import torch
    import transformers

    from monitor_jax.data.encode import ClassificationEncoder
    from tests.hf_models import save_tiny

    tok_vocab = len(json.loads((Path(demo_tokenizer) / "tokenizer.json").read_text())["model"]["vocab"])
    hf = save_tiny("qwen3", tmp_path / "hf", vocab_size=tok_vocab + 8)
    c = small_config(tmp_path, demo_tokenizer, max_rows=6,
                     tasks=[{"task": "chem_harm", "source": _demo("chem_harm", "test", 6)}])
    c.model.hf_path = str(hf)
    loaded = assemble.runtime(c, "")
    assert loaded.pretrained
    ev = assemble.evaluator(loaded, check_label_mass=True)
    with caplog.at_level("WARNING", logger="monitor_jax.eval"), jax.set_mesh(loaded.mesh):
        result = ev.run(loaded.params, step=0)
        ev.run(loaded.params, step=0)
    mass = result.sets[0].label_mass
    # Independently: transformers' softmax at the last prompt position, over the same prompts.
    ref = transformers.AutoModelForCausalLM.from_pretrained(str(hf)).eval()
    enc = ClassificationEncoder(assemble.task(base_config(), "chem_harm"), loaded.tokenizer, 128)
    masses = []
    for ex in ev.sets[0].examples:
        with torch.no_grad():
            probs = torch.softmax(ref(torch.tensor(ex.tokens[None].astype(np.int64))).logits[0, -1].double(), -1)
        masses.append(float(probs[enc.positive_id] + probs[enc.negative_id]))
    np.testing.assert_allclose(mass, np.mean(masses), rtol=1e-3)
    assert mass < 0.5
    warnings = [r.getMessage() for r in caplog.records if "of its probability on the labels" in r.getMessage()]
    assert len(warnings) == 1 and "eval set chem_harm" in warnings[0]      # once per set, not per run


def test_a_config_json_without_architectures_falls_back_to_model_type(tmp_path):
    from monitor_jax.model import load_hf
    from tests.hf_models import hf_logits, padded_batch, real_max_abs_diff, save_tiny

    hf = save_tiny("qwen2", tmp_path / "hf")
    config = json.loads((hf / "config.json").read_text())
    del config["architectures"]
    (hf / "config.json").write_text(json.dumps(config))
    model, cfg = load_hf(hf)
    assert cfg.family == "qwen2"
    tokens, mask = padded_batch()
    assert real_max_abs_diff(np.asarray(model(tokens, mask)), hf_logits(hf, tokens, mask), mask) < 1e-4
    config["model_type"] = "mamba"
    (hf / "config.json").write_text(json.dumps(config))
    from monitor_jax.errors import CheckpointError
    with pytest.raises(CheckpointError, match=r"no architectures and model_type='mamba' is not supported"):
        load_hf(hf)
