"""Export writes what transformers loads unchanged."""
import json

import numpy as np
import pytest

from monitor_jax.model import ModelConfig, create_model, load_hf, save_hf
from monitor_jax.model.tokenizer import build_tokenizer
from tests.hf_models import FAMILIES, hf_logits, padded_batch, real_max_abs_diff


@pytest.mark.parametrize("family", FAMILIES)
def test_import_export_round_trip(hf_dir, tmp_path, family):
    tokens, mask = padded_batch(seed=7)
    model, _ = load_hf(hf_dir[family])
    out = save_hf(model, tmp_path / "export")
    assert (out / "model.safetensors").exists() and not (out / "model.safetensors.index.json").exists()
    ref = hf_logits(hf_dir[family], tokens, mask)
    exported = hf_logits(out, tokens, mask)
    # Same float32 weights, same transformers code: identical up to float noise.
    assert real_max_abs_diff(exported, ref, mask) < 1e-5
    # And the exported checkpoint re-imports to the same model.
    again, _ = load_hf(out)
    np.testing.assert_array_equal(np.asarray(again(tokens, mask)), np.asarray(model(tokens, mask)))


def test_sharded_export_with_index(hf_dir, tmp_path):
    tokens, mask = padded_batch(seed=8)
    model, _ = load_hf(hf_dir["qwen2"])
    out = save_hf(model, tmp_path / "sharded", max_shard_bytes=20_000)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    files = sorted({f for f in index["weight_map"].values()})
    assert len(files) > 2 and all((out / f).exists() for f in files)
    assert not (out / "model.safetensors").exists()
    assert real_max_abs_diff(hf_logits(out, tokens, mask), hf_logits(hf_dir["qwen2"], tokens, mask), mask) < 1e-5
    again, _ = load_hf(out)  # our importer reads the index too
    np.testing.assert_array_equal(np.asarray(again(tokens, mask)), np.asarray(model(tokens, mask)))


def test_export_in_bfloat16(hf_dir, tmp_path):
    model, _ = load_hf(hf_dir["llama"])
    out = save_hf(model, tmp_path / "bf16", dtype="bfloat16")
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    from safetensors import safe_open
    with safe_open(out / "model.safetensors", framework="numpy") as f:
        assert f.get_slice("model.embed_tokens.weight").get_dtype() == "BF16"


@pytest.mark.parametrize("family", FAMILIES)
def test_export_of_a_model_built_from_config_alone(tmp_path, family):
    """No source config.json: export writes a complete one that transformers reads."""
    cfg = ModelConfig.from_hf(
        json.loads(json.dumps(__import__("tests.hf_models", fromlist=["hf_config"]).hf_config(family).to_dict()))
        | {"architectures": [{"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM",
                              "gemma3": "Gemma3ForCausalLM"}[family]]}).replace(source_hf_config="")
    model = create_model(cfg, seed=3)
    out = save_hf(model, tmp_path / family)
    tokens, mask = padded_batch(seed=9)
    assert real_max_abs_diff(hf_logits(out, tokens, mask), np.asarray(model(tokens, mask)), mask) < 1e-4
    _, again = load_hf(out)
    assert again.structure() == cfg.structure()


def test_tokenizer_files_travel_with_the_export(hf_dir, tmp_path):
    from transformers import AutoTokenizer

    tok = build_tokenizer(tmp_path / "tok", ["Is this harmful? Yes No"] * 20, vocab_size=300)
    model, _ = load_hf(hf_dir["qwen2"])
    out = save_hf(model, tmp_path / "with_tok", tokenizer=tmp_path / "tok")
    loaded = AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    assert loaded.encode("Is this harmful?") == tok.encode("Is this harmful?")
    assert loaded.chat_template == tok.hf.chat_template
