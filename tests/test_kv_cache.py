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
    right, right_mask = padded_batch(seed=12, batch=3, length=10)
    lengths = right_mask.sum(1)
    # The cache's layout: left padding (every row writes its next token at the same slot).
    prompt, mask = np.zeros_like(right), np.zeros_like(right_mask)
    for b in range(3):
        prompt[b, 10 - lengths[b]:], mask[b, 10 - lengths[b]:] = right[b, :lengths[b]], 1
    new = np.random.RandomState(13).randint(0, 256, size=(3, 8)).astype(np.int32)
    # The full-forward reference: each row's prompt, then its 8 new tokens, then padding (right-padded).
    full = np.zeros((3, 18), np.int32)
    for b in range(3):
        full[b, :lengths[b]] = right[b, :lengths[b]]
        full[b, lengths[b]:lengths[b] + 8] = new[b]
    full_mask = (np.arange(18)[None] < (lengths + 8)[:, None]).astype(np.int32)
    ref = np.asarray(model(full, full_mask))

    graphdef, state = nnx.split(model)
    prefill = jax.jit(lambda s, t, m: nnx.merge(graphdef, s).prefill(t, m, cache_size=24))
    step = jax.jit(lambda s, t, c: nnx.merge(graphdef, s).decode(t, c))
    logits, cache = prefill(state, prompt, mask)
    np.testing.assert_array_equal(np.asarray(cache.start_B), 10 - lengths)
    for b in range(3):  # prefill: the next-token logits after each row's last prompt token
        np.testing.assert_allclose(np.asarray(logits)[b], ref[b, lengths[b] - 1], atol=1e-4)
    for i in range(0, 8, 2):   # two tokens per call: decode appends any number of tokens
        logits, cache = step(state, new[:, i:i + 2], cache)
        for b in range(3):
            np.testing.assert_allclose(np.asarray(logits)[b], ref[b, lengths[b] + i:lengths[b] + i + 2], atol=1e-4,
                                       err_msg=f"{family} row {b} decode step {i}")
    assert int(cache.end) == 18
