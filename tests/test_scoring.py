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


@pytest.mark.parametrize("pack_max", [1, 3, 16])
def test_packed_scoring_equals_unpacked_in_input_order(model, examples, small_tokenizer, pack_max):
    """Several prompts per row (segment ids keep them apart): the same scores, every row once, input order."""
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    model = create_model(tiny_config(small_tokenizer.vocab_size), mesh=mesh, seed=4)
    params = nnx.state(model, nnx.Param)
    unpacked = Scorer(nnx.graphdef(model), mesh, batch_size=8, buckets=(32, 96), pad_id=small_tokenizer.pad_id)
    packed = Scorer(nnx.graphdef(model), mesh, batch_size=8, buckets=(32, 96), pad_id=small_tokenizer.pad_id,
                    pack_max=pack_max)
    with jax.set_mesh(mesh):
        ref = unpacked.score_all(params, examples)
        got = packed.score_all(params, examples)
        streamed = list(packed.score(params, examples))
    assert [s.index for s in got] == list(range(len(examples)))
    assert sorted(s.index for s in streamed) == list(range(len(examples)))
    for field in ("log_odds", "p_positive", "p_positive_vocab", "p_negative_vocab"):
        np.testing.assert_allclose([getattr(s, field) for s in got], [getattr(s, field) for s in ref],
                                   atol=1e-5, rtol=1e-5, err_msg=field)
    # shapes: the largest bucket or the last batch's smaller one, x a power of two of answer slots per row
    assert packed.compilations() <= 2 * (pack_max.bit_length() + 1)
    if pack_max > 1:   # the packed batches hold more real tokens per computed position
        assert packed.real_tokens / packed.computed_positions > unpacked.real_tokens / unpacked.computed_positions


def test_a_perturbation_in_one_packed_prompt_leaves_the_others_unchanged(model, examples, small_tokenizer):
    mesh = make_mesh(data=1, devices=jax.devices()[:1])
    scorer = Scorer(nnx.graphdef(model), mesh, batch_size=2, buckets=(96,), pad_id=small_tokenizer.pad_id,
                    pack_max=8)
    short = [ex for ex in examples if len(ex) < 40][:4]
    changed = list(short)
    tokens = short[0].tokens.copy()
    tokens[1:-1] = (tokens[1:-1] + 1) % small_tokenizer.vocab_size
    changed[0] = type(short[0])(**{**short[0].__dict__, "tokens": tokens})
    rows = [row for batch, _ in scorer._packed_batches(short) for row in batch]
    assert len(next(row for row in rows if any(i == 0 for i, _ in row))) > 1   # prompt 0 shares its row
    params = nnx.state(model, nnx.Param)
    with jax.set_mesh(mesh):
        before = scorer.score_all(params, short)
        after = scorer.score_all(params, changed)
    assert before[0].log_odds != after[0].log_odds
    assert [s.log_odds for s in before[1:]] == [s.log_odds for s in after[1:]]     # bitwise


def test_packed_rows_are_full_and_the_last_batch_takes_the_smallest_bucket(model):
    """Prompts of 20-110 tokens into rows of 128 (buckets 32, 64, 128), 4 rows a batch: every prompt exactly once,
    no row over its length or `pack_max`, the rows of all but the last batch nearly full (first-fit over several
    batches of prompts), and the last batch at the smallest bucket that holds what is left in one batch."""
    from monitor_jax.data.encode import classification_example
    from monitor_jax.data.pipeline import first_fit_decreasing
    from monitor_jax.data.tasks import LabelIds

    def prompts(lengths):
        return [classification_example(np.ones(n, np.int32), 0, LabelIds(1, 2)) for n in lengths]

    mesh = make_mesh(data=1, devices=jax.devices()[:1])
    scorer = Scorer(nnx.graphdef(model), mesh, batch_size=4, buckets=(32, 64, 128), pad_id=0, pack_max=6)
    examples = prompts(np.random.default_rng(3).integers(20, 111, 203))
    batches = list(scorer._packed_batches(examples))
    assert sorted(i for rows, _ in batches for row in rows for i, _ in row) == list(range(len(examples)))
    for rows, length in batches:
        assert 0 < len(rows) <= 4
        assert all(sum(len(ex) for _, ex in row) <= length and len(row) <= 6 for row in rows)
    *full, (last_rows, last_length) = batches
    assert {length for _, length in full} == {128}
    fill = sum(len(ex) for rows, _ in full for row in rows for _, ex in row) / (4 * 128 * len(full))
    assert fill > 0.93, fill             # 0.898 when each batch is first-fit from one batch of prompts alone
    left = [len(ex) for row in last_rows for _, ex in row]
    smaller = [b for b in (32, 64, 128) if b < last_length]
    assert all(max(left) > b or len(first_fit_decreasing(left, b, 6)) > 4 for b in smaller)
    # A short stream is all tail: three prompts of 20 take three rows of 32; five take two rows of 64.
    assert [(len(rows), length) for rows, length in scorer._packed_batches(prompts([20] * 3))] == [(3, 32)]
    assert [(len(rows), length) for rows, length in scorer._packed_batches(prompts([20] * 5))] == [(2, 64)]


def test_first_fit_decreasing_respects_capacity_and_item_count():
    from monitor_jax.data.pipeline import first_fit_decreasing

    lengths = list(np.random.default_rng(1).integers(1, 60, size=200))
    bins = first_fit_decreasing(lengths, 100, 4)
    assert sorted(i for b in bins for i in b) == list(range(200))
    assert all(sum(lengths[i] for i in b) <= 100 and len(b) <= 4 for b in bins)
    with pytest.raises(ValueError, match="an item of 101 does not fit a bin of 100"):
        first_fit_decreasing([101], 100, 4)
