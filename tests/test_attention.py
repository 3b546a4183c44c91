"""The flash kernel equals the dense one (values and gradients) and never builds [T, S] scores."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from monitor_jax.model import load_hf
from monitor_jax.model.attention import MaskInfo, dense_attention, flash_attention
from monitor_jax.model.transformer import positions_from_segments
from tests.hf_models import FAMILIES, hf_logits, padded_batch, real_max_abs_diff

B, T, K, G, H = 2, 37, 2, 3, 8   # T is not a multiple of the block: the keys are padded


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    q, k, v = (jnp.asarray(rng.normal(size=shape), jnp.float32)
               for shape in ((B, T, K, G, H), (B, T, K, H), (B, T, K, H)))
    segments = np.ones((B, T), np.int32)
    segments[0, 20:] = 2    # two packed sequences
    segments[1, 30:] = 0    # right padding
    segments = jnp.asarray(segments)
    positions = positions_from_segments(segments)
    order = jnp.broadcast_to(jnp.arange(T), (B, T))
    info = MaskInfo(segments, segments, order, order, positions, positions)
    weights = jnp.asarray(rng.normal(size=(B, T, K, G, H)), jnp.float32)
    return q, k, v, info, weights


@pytest.mark.parametrize("softcap", [None, 5.0])
@pytest.mark.parametrize("window", [None, 6])
def test_flash_equals_dense_with_gradients(softcap, window):
    q, k, v, info, weights = _inputs()
    kw = dict(scale=0.3, softcap=softcap, window=window)

    def loss(kernel, **extra):
        return lambda q, k, v: jnp.sum(kernel(q, k, v, info, **kw, **extra) * weights)

    dense = dense_attention(q, k, v, info, **kw)
    flash = jax.jit(lambda q, k, v: flash_attention(q, k, v, info, block=8, **kw))(q, k, v)
    np.testing.assert_allclose(np.asarray(flash), np.asarray(dense), atol=2e-6)
    # Padding queries see no key and get a zero output from both kernels.
    assert not np.asarray(dense)[1, 30:].any()
    g_dense = jax.grad(loss(dense_attention), argnums=(0, 1, 2))(q, k, v)
    g_flash = jax.jit(jax.grad(loss(flash_attention, block=8), argnums=(0, 1, 2)))(q, k, v)
    for name, a, b in zip("qkv", g_dense, g_flash):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-5, err_msg=f"d{name}")


def test_flash_never_builds_the_score_matrix():
    q, k, v, info, weights = _inputs()

    def loss(q, k, v):
        return jnp.sum(flash_attention(q, k, v, info, scale=0.3, block=8) * weights)

    jaxpr = str(jax.make_jaxpr(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v))
    assert f"f32[{B},{K},{G},8,8]" in jaxpr                            # one block pair of scores
    assert f"{T},{T}]" not in jaxpr and f"{T},40]" not in jaxpr        # never all of them
    dense = str(jax.make_jaxpr(jax.grad(lambda q, k, v: jnp.sum(dense_attention(q, k, v, info, scale=0.3))))(q, k, v))
    assert f"f32[{B},{K},{G},{T},{T}]" in dense                        # the check can fail


@pytest.mark.parametrize("family", FAMILIES)
def test_flash_model_matches_transformers(hf_dir, family):
    tokens, mask = padded_batch(seed=21)   # length 16: four blocks of 4 keys
    model, cfg = load_hf(hf_dir[family], attention="flash", attention_block=4)
    assert cfg.attention == "flash"
    assert real_max_abs_diff(np.asarray(model(tokens, mask)), hf_logits(hf_dir[family], tokens, mask), mask) < 1e-4


def test_unknown_kernel_is_an_error(hf_dir):
    with pytest.raises(ValueError, match="attention='splash'; choose dense or flash"):
        load_hf(hf_dir["llama"], attention="splash")


@pytest.mark.parametrize("window", [None, 12])
def test_block_table_skips_only_pairs_with_nothing_visible(window):
    """Conservative (never skips a visible pair) and tight on packed rows whose sequences fill whole blocks."""
    from monitor_jax.model.attention import block_table

    t, block = 64, 8
    segments = np.zeros((2, t), np.int32)
    segments[0, :16], segments[0, 16:40], segments[0, 40:56] = 1, 2, 3   # three packed sequences, padding
    segments[1, :48], segments[1, 48:] = 1, 2
    segments = jnp.asarray(segments)
    positions = positions_from_segments(segments)
    order = jnp.broadcast_to(jnp.arange(t), (2, t))
    info = MaskInfo(segments, segments, order, order, positions, positions)
    table = np.asarray(block_table(info, block, window))
    mask = np.asarray(info.block(0, t, window))                                  # [B, T, S] visibility
    exact = mask.reshape(2, t // block, block, t // block, block).any(axis=(0, 2, 4))
    assert (table | ~exact).all()                                               # every visible pair computed
    if window is None:
        np.testing.assert_array_equal(table, exact)                             # and nothing else
    assert table.sum() < np.tril(np.ones_like(table)).sum() < table.size        # skips beyond the causal half


def test_flash_on_packed_rows_equals_dense_with_gradients():
    """Several blocks, packed sequences and padding, so whole block pairs are skipped in both passes."""
    rng = np.random.default_rng(1)
    t = 40
    q, k, v = (jnp.asarray(rng.normal(size=shape), jnp.float32)
               for shape in ((B, t, K, G, H), (B, t, K, H), (B, t, K, H)))
    segments = np.zeros((B, t), np.int32)
    segments[0, :9], segments[0, 9:25], segments[0, 25:33] = 1, 2, 3
    segments[1, :17], segments[1, 17:] = 1, 2
    segments = jnp.asarray(segments)
    positions = positions_from_segments(segments)
    order = jnp.broadcast_to(jnp.arange(t), (B, t))
    info = MaskInfo(segments, segments, order, order, positions, positions)
    weights = jnp.asarray(rng.normal(size=(B, t, K, G, H)), jnp.float32)

    def loss(kernel, **extra):
        return lambda q, k, v: jnp.sum(kernel(q, k, v, info, scale=0.3, **extra) * weights)

    np.testing.assert_allclose(np.asarray(flash_attention(q, k, v, info, scale=0.3, block=8)),
                               np.asarray(dense_attention(q, k, v, info, scale=0.3)), atol=2e-6)
    g_dense = jax.grad(loss(dense_attention), argnums=(0, 1, 2))(q, k, v)
    g_flash = jax.jit(jax.grad(loss(flash_attention, block=8), argnums=(0, 1, 2)))(q, k, v)
    for name, a, b in zip("qkv", g_dense, g_flash):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-5, err_msg=f"d{name}")
