"""Prefill + cached decode equals the full forward at the same positions."""
import jax
import numpy as np
import pytest
from flax import nnx

from monitor_jax.model import load_hf
from tests.hf_models import FAMILIES, padded_batch


@pytest.mark.parametrize("family", FAMILIES)
def test_decode_8_tokens_equals_full_forward(hf_dir, family):
    model, _ = load_hf(hf_dir[family])
    prompt, mask = padded_batch(seed=12, batch=3, length=10)
    lengths = mask.sum(1)
    new = np.random.RandomState(13).randint(0, 256, size=(3, 8)).astype(np.int32)
    # The full-forward reference: each row's prompt, then its 8 new tokens, then padding.
    full = np.zeros((3, 18), np.int32)
    for b in range(3):
        full[b, :lengths[b]] = prompt[b, :lengths[b]]
        full[b, lengths[b]:lengths[b] + 8] = new[b]
    full_mask = (np.arange(18)[None] < (lengths + 8)[:, None]).astype(np.int32)
    ref = np.asarray(model(full, full_mask))

    graphdef, state = nnx.split(model)
    step = jax.jit(lambda s, t, c, m=None: nnx.merge(graphdef, s).decode(t, c, m))
    cache = model.init_cache(batch=3, size=24)
    logits, cache = step(state, prompt, cache, mask)
    np.testing.assert_array_equal(np.asarray(cache.lengths_B), lengths)
    for b in range(3):  # prefill logits at real positions
        np.testing.assert_allclose(np.asarray(logits)[b, :lengths[b]], ref[b, :lengths[b]], atol=1e-4)
    for i in range(8):
        logits, cache = step(state, new[:, i:i + 1], cache)
        for b in range(3):
            np.testing.assert_allclose(np.asarray(logits)[b, 0], ref[b, lengths[b] + i], atol=1e-4,
                                       err_msg=f"{family} row {b} decode step {i}")
    np.testing.assert_array_equal(np.asarray(cache.lengths_B), lengths + 8)
