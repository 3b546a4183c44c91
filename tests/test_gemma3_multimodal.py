"""Gemma 3 multimodal checkpoints (Gemma3ForConditionalGeneration): the text decoder imports, in either tensor
layout; export writes the same architecture and layout, the vision tower and projector copied bit for bit."""
import json
import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from monitor_jax.model import CheckpointError, ModelConfig, create_model, load_hf, lora, save_hf
from monitor_jax.model.config import GEMMA3_TEXT_DEFAULTS
from tests.hf_models import (config_json, hf_config, hf_multimodal_logits, load_multimodal, padded_batch,
                             real_max_abs_diff, save_tiny_multimodal)

LAYOUTS = ("legacy", "new")
# Where each layout keeps the text decoder, and the tensors that are not ours.
TEXT = {"legacy": "language_model.model.", "new": "model.language_model."}
NON_TEXT = {"legacy": ("vision_tower.", "multi_modal_projector."),
            "new": ("model.vision_tower.", "model.multi_modal_projector.")}


@pytest.fixture(scope="module")
def mm_dir(tmp_path_factory):
    """layout -> a tiny Gemma3ForConditionalGeneration checkpoint (legacy: as save_pretrained writes it)."""
    root = tmp_path_factory.mktemp("gemma3_mm")
    return {layout: save_tiny_multimodal(root / layout, layout) for layout in LAYOUTS}


def _tensors(path) -> dict[str, np.ndarray]:
    out = {}
    for f in sorted(path.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def _non_text(names, layout) -> list[str]:
    return sorted(k for k in names if k.startswith(NON_TEXT[layout]))


def _image_logits(model):
    """The multimodal forward with an image (4 image tokens, transformers' placeholder id) and text around it."""
    import torch

    ids = torch.tensor([[5, 7] + [model.config.image_token_index] * 4 + [9, 11]])
    pixels = torch.randn(1, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model(input_ids=ids, pixel_values=pixels).logits.numpy()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_text_decoder_imports_and_gives_transformers_text_logits(mm_dir, layout):
    path = mm_dir[layout]
    _, info = load_multimodal(path)   # the test checkpoint is one transformers reads whole, in both layouts
    assert not info["missing_keys"] and not info["unexpected_keys"]
    names = _tensors(path)
    assert any(k.startswith(TEXT[layout]) for k in names) and _non_text(names, layout)

    model, cfg = load_hf(path)
    assert cfg.family == "gemma3" and cfg.multimodal_layout == layout
    # The vision tower and projector are not parameters of ours, but import kept their names.
    assert list(cfg.multimodal_tensors) == _non_text(names, layout)
    text = ModelConfig.from_hf(hf_config("gemma3").to_dict() | {"architectures": ["Gemma3ForCausalLM"]})
    assert cfg.structure() == text.structure()
    assert json.loads(cfg.source_hf_config) == config_json(path)

    tokens, mask = padded_batch()
    ours = np.asarray(model(tokens, attention_mask=mask))
    ref = hf_multimodal_logits(path, tokens, mask)   # input_ids only, no pixel_values
    assert real_max_abs_diff(ours, ref, mask) < 1e-4
    assert mask.sum(1).min() < mask.shape[1]


def test_the_text_defaults_are_transformers_gemma3_text_config():
    import transformers

    ref = transformers.Gemma3TextConfig()
    # Our v4 names for what v5 keeps in rope_parameters and _sliding_window_pattern.
    derived = {"rope_theta": ref.rope_parameters["full_attention"]["rope_theta"],
               "rope_local_base_freq": ref.rope_parameters["sliding_attention"]["rope_theta"],
               "sliding_window_pattern": ref._sliding_window_pattern}
    assert GEMMA3_TEXT_DEFAULTS == {k: derived[k] if k in derived else getattr(ref, k) for k in GEMMA3_TEXT_DEFAULTS}
    assert {r["rope_type"] for r in ref.rope_parameters.values()} == {"default"}
    # A text_config with nothing in it (or none at all) is transformers' default text model.
    full = ModelConfig.from_hf(ref.to_dict() | {"architectures": ["Gemma3ForCausalLM"]})
    for text in ({"text_config": {"model_type": "gemma3_text"}}, {}):
        sparse = ModelConfig.from_hf({"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3"}
                                     | text)
        assert sparse.structure() == full.structure() and sparse.max_positions == full.max_positions
        assert sparse.multimodal_layout == "legacy"   # until load_hf has seen the tensor names


@pytest.mark.parametrize("style", ["v5", "v4"])
def test_a_sparse_config_json_gets_the_defaults(tmp_path, style):
    """Released Gemma 3 config.json files leave out every text_config field equal to its default."""
    import transformers

    path = save_tiny_multimodal(tmp_path / "ckpt", num_hidden_layers=6, query_pre_attn_scalar=256,
                                max_position_embeddings=131_072, rope_parameters=None, layer_types=None)
    hf = config_json(path)
    # transformers' defaults, the layer types those of a 6-layer model (the 6-layer pattern).
    defaults = transformers.Gemma3TextConfig().to_dict() | {
        "layer_types": transformers.Gemma3TextConfig(num_hidden_layers=6).layer_types}
    text = {k: v for k, v in hf["text_config"].items() if k == "model_type" or defaults.get(k, ...) != v}
    assert {"rope_parameters", "layer_types", "query_pre_attn_scalar", "rms_norm_eps", "hidden_activation",
            "max_position_embeddings", "tie_word_embeddings", "attention_bias", "final_logit_softcapping",
            "attn_logit_softcapping"} <= set(hf["text_config"]) - set(text)
    if style == "v4":  # as the Hub's files: rope_scaling for the global layers, the pattern as an int
        text.update(rope_scaling={"rope_type": "linear", "factor": 4.0}, sliding_window_pattern=2)
    hf["text_config"] = text
    del hf["tie_word_embeddings"]
    (path / "config.json").write_text(json.dumps(hf))

    model, cfg = load_hf(path)
    assert (cfg.rope_theta, cfg.local_rope_theta, cfg.query_scale, cfg.max_positions, cfg.tie_embeddings) == (
        1e6, 1e4, 256 ** -0.5, 131_072, True)
    if style == "v5":
        assert cfg.rope_type == "default" and cfg.layer_types == ("sliding",) * 5 + ("full",)
    else:
        assert cfg.rope_type == "linear" and cfg.rope_factor == 4.0 and cfg.layer_types == ("sliding", "full") * 3
    tokens, mask = padded_batch(seed=1)
    assert real_max_abs_diff(np.asarray(model(tokens, mask)), hf_multimodal_logits(path, tokens, mask), mask) < 1e-4
    # Export writes the sparse config.json back as it was.
    assert config_json(save_hf(model, tmp_path / "out")) == hf | {"dtype": "float32"}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_export_is_the_source_architecture_and_layout_with_the_vision_tower_bitwise(mm_dir, tmp_path, layout):
    src = mm_dir[layout]
    model, _ = load_hf(src)
    out = save_hf(model, tmp_path / "export")
    source, written = _tensors(src), _tensors(out)
    assert sorted(written) == sorted(source)   # the same names: the same layout
    for k in _non_text(source, layout):
        assert written[k].dtype == source[k].dtype and written[k].tobytes() == source[k].tobytes(), k
    assert config_json(out) == config_json(src)   # float32 in, float32 out
    assert (out / "generation_config.json").exists()

    exported, info = load_multimodal(out)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    tokens, mask = padded_batch(seed=2)
    ours = np.asarray(model(tokens, mask))
    assert real_max_abs_diff(hf_multimodal_logits(out, tokens, mask), ours, mask) < 1e-4
    # With an image too: the exported checkpoint is the source, bit for bit in what it computes.
    np.testing.assert_array_equal(_image_logits(exported), _image_logits(load_multimodal(src)[0]))
    again, cfg = load_hf(out)
    assert cfg.multimodal_layout == layout
    np.testing.assert_array_equal(np.asarray(again(tokens, mask)), ours)


def test_bfloat16_sharded_export_keeps_the_vision_tower_as_it_was(mm_dir, tmp_path):
    src = mm_dir["legacy"]
    model, _ = load_hf(src)
    out = save_hf(model, tmp_path / "bf16", dtype="bfloat16", max_shard_bytes=20_000)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert sorted(index["weight_map"]) == sorted(_tensors(src)) and len(set(index["weight_map"].values())) > 2
    source = _tensors(src)
    for k, f in index["weight_map"].items():
        with safe_open(out / f, framework="numpy") as st:
            if k.startswith(NON_TEXT["legacy"]):   # carried unchanged: float32, the source's bytes
                assert st.get_tensor(k).tobytes() == source[k].tobytes(), k
            else:
                assert st.get_slice(k).get_dtype() == "BF16", k
    hf = config_json(out)
    assert hf["dtype"] == "bfloat16" and hf == config_json(src) | {"dtype": "bfloat16"}
    _, info = load_multimodal(out)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    tokens, mask = padded_batch(seed=3)
    ref = hf_multimodal_logits(src, tokens, mask)
    assert real_max_abs_diff(hf_multimodal_logits(out, tokens, mask), ref, mask) < 0.05 * np.abs(ref).max()
    again, cfg = load_hf(out)   # the sharded multimodal layout imports too
    assert cfg.multimodal_layout == "legacy" and str(again.embedding[...].dtype) == "float32"


def test_export_without_its_source_is_an_error_naming_it(mm_dir, tmp_path):
    src = tmp_path / "source"
    shutil.copytree(mm_dir["new"], src)
    model, cfg = load_hf(src)
    shutil.rmtree(src)
    with pytest.raises(CheckpointError, match=f"source checkpoint {re.escape(str(src.resolve()))} is gone"):
        save_hf(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()   # nothing written
    # A multimodal model that never had a source directory cannot be exported either.
    with pytest.raises(CheckpointError, match="multimodal model without a source checkpoint"):
        save_hf(create_model(cfg.replace(source_path="")), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_other_tensors_are_still_errors(mm_dir, tmp_path):
    path = tmp_path / "ckpt"
    shutil.copytree(mm_dir["legacy"], path)
    original = load_file(path / "model.safetensors")

    def edit(extra):
        save_file(original | extra, str(path / "model.safetensors"), metadata={"format": "pt"})

    edit({"language_model.model.layers.0.self_attn.q_proj.bias": np.zeros(64, np.float32)})
    with pytest.raises(CheckpointError, match=r"does not use: language_model\.model\.layers\.0\.self_attn\.q_proj"
                                              r"\.bias \(shape \(64,\)\)$"):
        load_hf(path)
    edit({"model.vision_tower.post_layernorm.weight": np.zeros(16, np.float32)})   # the other layout's name
    with pytest.raises(CheckpointError, match=r"does not use: model\.vision_tower\.post_layernorm\.weight"):
        load_hf(path)
    edit({"model.language_model.norm.weight": np.zeros(32, np.float32)})
    with pytest.raises(CheckpointError, match=r"mixes two layouts of text decoder tensors \(language_model\.model\.\* "
                                              r"and model\.language_model\.\*\)"):
        load_hf(path)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_lora_on_the_text_decoder_exports_for_peft_and_merged(mm_dir, tmp_path, layout):
    """PEFT names the live model's modules (model.language_model.*, whatever the file layout), never the vision
    tower's; the merged export is a multimodal checkpoint again."""
    import peft

    src = mm_dir[layout]
    tokens, mask = padded_batch(seed=4)
    valid = mask.astype(bool)
    model, cfg = load_hf(src)
    lora.add_adapters(model, list(lora.projections(model)), rank=4, alpha=8.0)
    for i, ad in enumerate(lora.adapted(model).values()):   # as training leaves them: B not zero
        ad.b.set_value(jax.random.normal(jax.random.key(i), ad.b.shape) * 0.2)
    ours = np.asarray(model(jnp.asarray(tokens), attention_mask=jnp.asarray(mask)))
    assert np.abs(ours - np.asarray(load_hf(src)[0](tokens, mask)))[valid].max() > 1e-2   # the adapters matter

    lora.save_peft(model, tmp_path / "adapter", base_model=str(src))
    targets = json.loads((tmp_path / "adapter" / lora.ADAPTER_CONFIG).read_text())["target_modules"]
    assert len(targets) == 7 * cfg.num_layers and all(t.startswith("model.language_model.layers.") for t in targets)
    with_peft = peft.PeftModel.from_pretrained(load_multimodal(src)[0], str(tmp_path / "adapter")).eval()
    adapted = [n for n, m in with_peft.named_modules() if hasattr(m, "lora_A") and len(m.lora_A)]
    assert len(adapted) == 7 * cfg.num_layers and not any("vision" in n for n in adapted)
    import torch
    with torch.no_grad():
        theirs = with_peft(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask)).logits.numpy()
    np.testing.assert_allclose(theirs[valid], ours[valid], atol=1e-4)

    imported, cfg = load_hf(src)   # and the PEFT directory imports back onto the multimodal model
    lora.load_peft(imported, lora.read_peft(tmp_path / "adapter", cfg))
    np.testing.assert_allclose(np.asarray(imported(tokens, mask))[valid], ours[valid], atol=1e-5)

    out = save_hf(lora.merged(model), tmp_path / "merged")
    assert sorted(_tensors(out)) == sorted(_tensors(src))
    np.testing.assert_allclose(hf_multimodal_logits(out, tokens, mask)[valid], ours[valid], atol=1e-4)


def test_the_text_decoder_alone_exports_as_gemma3_for_causal_lm(mm_dir, tmp_path):
    """A multimodal import with its layout cleared is a plain text model: Gemma3ForCausalLM, no vision tower."""
    from flax import nnx

    from monitor_jax.model import abstract_model
    from tests.hf_models import hf_logits

    model, cfg = load_hf(mm_dir["new"])
    text_cfg = cfg.replace(multimodal_layout="", multimodal_tensors=())
    text = nnx.merge(nnx.graphdef(abstract_model(text_cfg)), nnx.state(model))
    out = save_hf(text, tmp_path / "text")
    hf = config_json(out)
    assert hf["architectures"] == ["Gemma3ForCausalLM"] and "vision_config" not in hf and hf["eos_token_id"] == 1
    assert not _non_text(_tensors(out), "legacy") and not _non_text(_tensors(out), "new")
    tokens, mask = padded_batch(seed=5)
    assert real_max_abs_diff(hf_logits(out, tokens, mask), np.asarray(model(tokens, mask)), mask) < 1e-4
