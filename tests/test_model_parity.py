"""Our forward equals transformers' on real checkpoint files, for every family."""
import json

import numpy as np
import pytest

from monitor_jax.model import load_hf
from tests.hf_models import FAMILIES, config_json, hf_logits, padded_batch, real_max_abs_diff, save_tiny


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_match_transformers_on_right_padded_batch(hf_dir, family):
    tokens, mask = padded_batch()
    model, cfg = load_hf(hf_dir[family])
    assert cfg.family == family
    ours = np.asarray(model(tokens, attention_mask=mask))
    ref = hf_logits(hf_dir[family], tokens, mask)
    assert ours.shape == ref.shape
    assert real_max_abs_diff(ours, ref, mask) < 1e-4
    # The rows really are padded, and the padded rows' real positions were compared.
    assert mask.sum(1).min() < mask.shape[1]


@pytest.mark.parametrize("family", ["qwen3", "gemma3"])
def test_tied_and_untied_embeddings(tmp_path, family):
    tie = family == "qwen3"  # the opposite of the fixture's choice
    path = save_tiny(family, tmp_path / family, tie_word_embeddings=tie)
    tokens, mask = padded_batch(seed=1)
    model, cfg = load_hf(path)
    assert cfg.tie_embeddings == tie and (model.lm_head is None) == tie
    assert real_max_abs_diff(np.asarray(model(tokens, mask)), hf_logits(path, tokens, mask), mask) < 1e-4


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_transformers_v4_config_layout(tmp_path, family):
    """Checkpoints on the Hub carry rope_theta/rope_scaling, not v5's rope_parameters."""
    path = save_tiny(family, tmp_path / family)
    hf = config_json(path)
    rope = hf.pop("rope_parameters")
    if family == "llama":
        hf["rope_theta"] = rope.pop("rope_theta")
        hf["rope_scaling"] = rope
    else:
        hf["rope_theta"] = rope["full_attention"].pop("rope_theta")
        hf["rope_scaling"] = rope["full_attention"]
        hf["rope_local_base_freq"] = rope["sliding_attention"]["rope_theta"]
        hf["sliding_window_pattern"] = 2
        hf.pop("layer_types")  # v4 Gemma 3 derives the layer types from the pattern
    (path / "config.json").write_text(json.dumps(hf))
    tokens, mask = padded_batch(seed=2)
    model, cfg = load_hf(path)
    if family == "gemma3":
        assert cfg.layer_types == ("sliding", "full", "sliding")
        assert cfg.rope_type == "linear" and cfg.local_rope_theta == 1e4
    else:
        assert cfg.rope_type == "llama3"
    assert real_max_abs_diff(np.asarray(model(tokens, mask)), hf_logits(path, tokens, mask), mask) < 1e-4


def test_packed_segments_equal_separate_rows(hf_dir):
    """Packing with segment ids: each segment sees only itself, positions restart at 0."""
    model, _ = load_hf(hf_dir["gemma3"])
    rng = np.random.RandomState(3)
    a, b = rng.randint(0, 256, size=(1, 7)), rng.randint(0, 256, size=(1, 6))
    packed = np.concatenate([a, b, np.zeros((1, 3), int)], axis=1)
    segments = np.array([[1] * 7 + [2] * 6 + [0] * 3])
    out = np.asarray(model(packed, segment_ids=segments))
    np.testing.assert_allclose(out[0, :7], np.asarray(model(a))[0], atol=1e-5)
    np.testing.assert_allclose(out[0, 7:13], np.asarray(model(b))[0], atol=1e-5)


@pytest.mark.parametrize("remat", ["full", "dots"])
def test_remat_changes_nothing_numerically(hf_dir, remat):
    import jax
    from flax import nnx

    tokens, mask = padded_batch(seed=4)
    base, _ = load_hf(hf_dir["llama"])
    rem, cfg = load_hf(hf_dir["llama"], remat=remat)
    assert cfg.remat == remat

    def loss(model):
        return (model(tokens, mask) ** 2).mean()

    g0 = nnx.grad(loss)(base)
    g1 = nnx.grad(loss)(rem)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6), g0, g1)


def test_bf16_compute_is_close(hf_dir):
    tokens, mask = padded_batch(seed=5)
    model, cfg = load_hf(hf_dir["qwen3"], param_dtype="bfloat16")
    assert str(model.embedding[...].dtype) == "bfloat16"
    ours = np.asarray(model(tokens, mask))
    ref = hf_logits(hf_dir["qwen3"], tokens, mask)
    # bf16 has ~3 significant digits; this catches wrong math, not rounding.
    assert real_max_abs_diff(ours, ref, mask) < 0.05 * np.abs(ref).max()
