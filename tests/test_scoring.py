"""The jitted scorer: log-odds equal the full forward's, bounded compilations, sharding, padding."""
import jax
import numpy as np
import pytest
from flax import nnx

from monitor_jax.data.encode import ClassificationEncoder
from monitor_jax.eval.scoring import Scorer
from monitor_jax.model import create_model
from monitor_jax.parallel import make_mesh
from tests.train_helpers import TASK, tiny_config


@pytest.fixture(scope="module")
def examples(small_tokenizer):
    enc = ClassificationEncoder(TASK, small_tokenizer, 96)
    rng = np.random.default_rng(0)
    words = ["store", "chemicals", "safely", "at", "home", "how", "do", "I", "make", "gas"]
    rows = [{"text": " ".join(rng.choice(words, size=rng.integers(1, 40))), "label": int(i % 2)} for i in range(37)]
    return [enc(r) for r in rows]


@pytest.fixture(scope="module")
def model(small_tokenizer):
    return create_model(tiny_config(small_tokenizer.vocab_size), seed=4)


def _reference(model, examples):
    """Full [B, T, V] logits of all prompts, right-padded in one batch, read at each answer position."""
    length = max(len(ex) for ex in examples)
    tokens = np.zeros((len(examples), length), np.int32)
    mask = np.zeros_like(tokens)
    for i, ex in enumerate(examples):
        tokens[i, :len(ex)], mask[i, :len(ex)] = ex.tokens, 1
    logits = np.asarray(jax.jit(lambda t, m: model(t, m))(tokens, mask)).astype(np.float64)
    return np.array([logits[i, ex.label_position, ex.positive_id] - logits[i, ex.label_position, ex.negative_id]
                     for i, ex in enumerate(examples)])


def test_log_odds_equal_the_full_forward_at_the_answer_position(model, examples, small_tokenizer):
    mesh = make_mesh(data=1, devices=jax.devices()[:1])
    scorer = Scorer(nnx.graphdef(model), mesh, batch_size=8, buckets=(16, 32, 64, 96), pad_id=small_tokenizer.pad_id)
    with jax.set_mesh(mesh):
        scored = scorer.score_all(nnx.state(model, nnx.Param), examples)
    assert [s.index for s in scored] == list(range(len(examples)))
    assert len({len(ex) for ex in examples}) > 10   # many lengths, right-padded into buckets
    ref = _reference(model, examples)
    np.testing.assert_allclose([s.log_odds for s in scored], ref, atol=1e-4)
    np.testing.assert_allclose([s.p_positive for s in scored], 1 / (1 + np.exp(-ref)), atol=1e-5)
    # Compilations are bounded by the number of buckets, however many lengths the data has.
    assert scorer.compilations() <= 4


def test_sharded_scoring_equals_single_device(model, examples, small_tokenizer, capfd):
    results = []
    for mesh in (make_mesh(data=1, devices=jax.devices()[:1]), make_mesh(data=2, fsdp=2, tensor=2)):
        model = create_model(tiny_config(small_tokenizer.vocab_size), mesh=mesh, seed=4)
        params = nnx.state(model, nnx.Param)
        scorer = Scorer(nnx.graphdef(model), mesh, batch_size=8, buckets=(32, 96), pad_id=small_tokenizer.pad_id)
        with jax.set_mesh(mesh):
            results.append(np.array([s.log_odds for s in scorer.score_all(params, examples)]))
    np.testing.assert_allclose(results[0], results[1], atol=1e-5)
    assert "Involuntary full rematerialization" not in capfd.readouterr().err


def test_padding_rows_never_reach_the_results(model, examples, small_tokenizer):
    mesh = make_mesh(data=1, devices=jax.devices()[:1])
    scorer = Scorer(nnx.graphdef(model), mesh, batch_size=16, buckets=(96,), pad_id=small_tokenizer.pad_id)
    with jax.set_mesh(mesh):
        scored = list(scorer.score(nnx.state(model, nnx.Param), examples[:21]))   # 16 + a partial batch of 5
    assert sorted(s.index for s in scored) == list(range(21))


def test_prompt_longer_than_every_bucket_is_an_error(model, examples, small_tokenizer):
    mesh = make_mesh(data=1, devices=jax.devices()[:1])
    scorer = Scorer(nnx.graphdef(model), mesh, batch_size=8, buckets=(8,), pad_id=small_tokenizer.pad_id)
    with pytest.raises(ValueError, match="longer than the largest bucket 8"):
        list(scorer.score(nnx.state(model, nnx.Param), examples))
