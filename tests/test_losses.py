"""Losses against naive full-logits references, values and gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from monitor_jax.data.encode import CLASSIFICATION, INSTRUCTION
from monitor_jax.model import create_model
from monitor_jax.train.losses import classification_loss, combine, instruction_loss
from tests.train_helpers import batches, tiny_config, to_jnp


@pytest.fixture(scope="module")
def setup(small_tokenizer):
    model = create_model(tiny_config(small_tokenizer.vocab_size), seed=1)
    batch = to_jnp(batches(small_tokenizer)[0])
    assert 0 < int((batch["kind"] == CLASSIFICATION).sum()) < batch["kind"].shape[0]
    return model, batch


def _naive_masked_ce(model, batch, row_kind):
    """Full [B, T, V] logits, token CE weighted by the batch weights of rows of one kind."""
    logits = model(batch["tokens"], segment_ids=batch["segment_ids"], positions=batch["positions"])
    ce = jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, batch["targets"][..., None], -1)[..., 0]
    w = batch["weights"] * (batch["kind"] == row_kind)[:, None]
    return jnp.sum(ce * w), jnp.sum(w)


def _hidden(model, batch):
    return model.hidden_states(batch["tokens"], segment_ids=batch["segment_ids"], positions=batch["positions"])


def _grads_close(f, g, model):
    gf, gg = nnx.grad(f)(model), nnx.grad(g)(model)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5), gf, gg)


def test_classification_loss_is_masked_sft_with_only_the_label_unmasked(setup):
    model, batch = setup
    ours = lambda m: classification_loss(m.unembed, _hidden(m, batch), batch)[0]  # noqa: E731
    naive = lambda m: _naive_masked_ce(m, batch, CLASSIFICATION)[0]  # noqa: E731
    s, n, _ = classification_loss(model.unembed, _hidden(model, batch), batch)
    ref_s, ref_n = _naive_masked_ce(model, batch, CLASSIFICATION)
    assert float(n) == float(ref_n)
    np.testing.assert_allclose(s, ref_s, rtol=1e-5)
    _grads_close(ours, naive, model)


def test_two_token_softmax(setup):
    model, batch = setup
    s, n, _ = classification_loss(model.unembed, _hidden(model, batch), batch, two_token=True)
    logits = model(batch["tokens"], segment_ids=batch["segment_ids"], positions=batch["positions"])
    ref = 0.0
    for b in np.flatnonzero(np.asarray(batch["kind"]) == CLASSIFICATION):
        row = np.asarray(logits[b, batch["label_position"][b]], np.float64)
        pair = np.array([row[batch["positive_id"][b]], row[batch["negative_id"][b]]])
        ref += -(pair - np.logaddexp(*pair))[0 if batch["label"][b] == 1 else 1]
    np.testing.assert_allclose(float(s), ref, rtol=1e-5)


@pytest.mark.parametrize("chunk", [8, 16, 64])
def test_chunked_instruction_loss_equals_full_logits(setup, chunk):
    model, batch = setup
    s, n = instruction_loss(model.unembedding(), _hidden(model, batch), batch, chunk=chunk)
    ref_s, ref_n = _naive_masked_ce(model, batch, INSTRUCTION)
    assert float(n) == float(ref_n) > 0
    np.testing.assert_allclose(s, ref_s, rtol=1e-5)
    _grads_close(lambda m: instruction_loss(m.unembedding(), _hidden(m, batch), batch, chunk=chunk)[0],
                 lambda m: _naive_masked_ce(m, batch, INSTRUCTION)[0], model)


def test_chunk_must_divide_length(setup):
    model, batch = setup
    with pytest.raises(ValueError, match="not a multiple of loss.chunk_size=24"):
        instruction_loss(model.unembedding(), _hidden(model, batch), batch, chunk=24)


def test_instruction_loss_never_builds_full_logits(setup):
    model, batch = setup
    loss = lambda h: instruction_loss(model.unembedding(), h, batch, chunk=16)  # noqa: E731
    jaxpr = str(jax.make_jaxpr(loss)(_hidden(model, batch)))
    b, t = batch["tokens"].shape
    v = model.cfg.vocab_size
    assert f"f32[{b},16,{v}]" in jaxpr and f"f32[{b},{t},{v}]" not in jaxpr
    grad = str(jax.make_jaxpr(jax.grad(lambda h: loss(h)[0]))(_hidden(model, batch)))   # nor its gradient
    assert f"f32[{b},16,{v}]" in grad and f"{t},{v}]" not in grad


def test_per_source_and_pooled_on_unequal_counts():
    # 2 classification targets with CE sum 3.0; 10 instruction tokens with CE sum 5.0.
    cls_sum, cls_n, sft_sum, sft_n = 3.0, 2.0, 5.0, 10.0
    assert float(combine(cls_sum, cls_n, sft_sum, sft_n, 1.0, 1.0, "per_source")) == pytest.approx(3 / 2 + 5 / 10)
    assert float(combine(cls_sum, cls_n, sft_sum, sft_n, 1.0, 1.0, "pooled")) == pytest.approx(8 / 12)
    assert float(combine(cls_sum, cls_n, sft_sum, sft_n, 2.0, 0.5, "per_source")) == pytest.approx(2 * 1.5 + 0.25)
    assert float(combine(cls_sum, cls_n, sft_sum, sft_n, 2.0, 0.5, "pooled")) == pytest.approx((6 + 2.5) / 12)
    # No rows of a kind: that term is 0, not NaN.
    assert float(combine(0.0, 0.0, sft_sum, sft_n, 1.0, 1.0, "per_source")) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="choose one of"):
        combine(cls_sum, cls_n, sft_sum, sft_n, 1.0, 1.0, "mean")


@pytest.mark.parametrize("kw", [dict(tie_embeddings=True), dict(final_logit_softcap=5.0)], ids=["tied", "softcap"])
def test_chunked_instruction_gradient_with_tied_weights_and_a_soft_cap(small_tokenizer, kw):
    """The gradient computed in the forward pass (custom VJP) equals autodiff through full logits."""
    model = create_model(tiny_config(small_tokenizer.vocab_size, **kw), seed=3)
    batch = to_jnp(batches(small_tokenizer)[1])
    s, _ = instruction_loss(model.unembedding(), _hidden(model, batch), batch, chunk=16)
    np.testing.assert_allclose(s, _naive_masked_ce(model, batch, INSTRUCTION)[0], rtol=1e-5)
    _grads_close(lambda m: instruction_loss(m.unembedding(), _hidden(m, batch), batch, chunk=16)[0],
                 lambda m: _naive_masked_ce(m, batch, INSTRUCTION)[0], model)
