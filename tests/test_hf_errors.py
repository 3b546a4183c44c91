"""Each import error names what is wrong: the key, and both shapes."""
import json
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from monitor_jax.model import CheckpointError, load_hf


@pytest.fixture
def ckpt(hf_dir, tmp_path):
    path = tmp_path / "ckpt"
    shutil.copytree(hf_dir["qwen3"], path)
    return path


def _edit(path, fn):
    tensors = load_file(path / "model.safetensors")
    fn(tensors)
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})


def test_missing_tensor(ckpt):
    _edit(ckpt, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(CheckpointError, match=r"missing 1 tensor.*: model\.layers\.1\.mlp\.up_proj\.weight "
                                              r"\(expected shape \(64, 32\)\)$") as e:
        load_hf(ckpt)
    assert str(ckpt) in str(e.value)


def test_unexpected_tensor(ckpt):
    _edit(ckpt, lambda t: t.__setitem__("model.layers.0.self_attn.q_proj.bias", np.zeros(64, np.float32)))
    with pytest.raises(CheckpointError, match=r"does not use: model\.layers\.0\.self_attn\.q_proj\.bias "
                                              r"\(shape \(64,\)\)$"):
        load_hf(ckpt)


def test_mis_shaped_tensor(ckpt):
    _edit(ckpt, lambda t: t.__setitem__("model.layers.0.self_attn.k_proj.weight", np.zeros((48, 32), np.float32)))
    with pytest.raises(CheckpointError, match=r"model\.layers\.0\.self_attn\.k_proj\.weight in model\.safetensors "
                                              r"has shape \(48, 32\), but config\.json implies \(32, 32\)"):
        load_hf(ckpt)


def test_unsupported_architecture(ckpt):
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["architectures"] = ["MistralForCausalLM"]
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"MistralForCausalLM.*supported: \['Gemma3ForCausalLM', "
                                         r"'LlamaForCausalLM', 'Qwen2ForCausalLM', 'Qwen3ForCausalLM'\]"):
        load_hf(ckpt)


def test_missing_config_and_weights(tmp_path):
    with pytest.raises(CheckpointError, match="config.json does not exist"):
        load_hf(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "vocab_size": 8,
                                                      "hidden_size": 8, "num_hidden_layers": 1,
                                                      "num_attention_heads": 2, "intermediate_size": 16}))
    with pytest.raises(CheckpointError, match="no \\*.safetensors files"):
        load_hf(tmp_path)


def test_index_naming_absent_file(hf_dir, tmp_path):
    from monitor_jax.model import save_hf
    model, _ = load_hf(hf_dir["llama"])
    out = save_hf(model, tmp_path / "sharded", max_shard_bytes=20_000)
    victim = sorted(out.glob("model-*.safetensors"))[1]
    victim.unlink()
    with pytest.raises(CheckpointError, match=victim.name):
        load_hf(out)
