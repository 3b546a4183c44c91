"""Packed classification rows: several examples per row, each with its own label slot.

The loss of a packed batch is the sum of its examples' unpacked losses (values and gradients); segments never
see each other; the mixture with packing keeps its exact composition, is regenerated from the step alone and
resumes to the same batches.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from monitor_jax.data.encode import CLASSIFICATION, INSTRUCTION, ClassificationEncoder, InstructionEncoder, pack, pad
from monitor_jax.data.mixing import make_schedule
from monitor_jax.data.pipeline import PackedStream, train_batches
from monitor_jax.data.sources import ListSource
from monitor_jax.model import create_model
from monitor_jax.train.losses import classification_terms
from tests.train_helpers import CHAT, TASK, tiny_config

T, K = 128, 4


@pytest.fixture(scope="module")
def examples(small_tokenizer):
    enc = ClassificationEncoder(TASK, small_tokenizer, T)
    words = ["how", "do", "I", "store", "make", "gas", "safely", "at", "home"]
    rng = np.random.default_rng(3)
    return [enc({"text": " ".join(rng.choice(words, size=rng.integers(1, 9))), "label": i % 2}) for i in range(12)]


@pytest.fixture(scope="module")
def model(small_tokenizer):
    return create_model(tiny_config(small_tokenizer.vocab_size), seed=1)


def _stack(rows):
    return {k: jnp.asarray(np.stack([r[k] for r in rows])) for k in rows[0]}


def _cls_sum(model, batch):
    """Summed classification CE and its per-slot terms, from one forward over the batch."""
    hidden = model.hidden_states(batch["tokens"], segment_ids=batch["segment_ids"], positions=batch["positions"])
    ce_N, _, mask_N = classification_terms(model.unembed, hidden, batch)
    return jnp.sum(ce_N), (ce_N, mask_N)


def _loss_and_grads(model, batch):
    graphdef, params = nnx.split(model, nnx.Param)

    def f(p):
        return _cls_sum(nnx.merge(graphdef, p), batch)

    (loss, (ce, mask)), grads = jax.value_and_grad(f, has_aux=True)(params)
    return float(loss), np.asarray(ce), np.asarray(mask), jax.tree.map(np.asarray, grads)


@pytest.mark.parametrize("sizes", [(1, 1, 1), (3, 2, 1), (K, K, 4)], ids=["one", "several", "full"])
def test_packed_loss_and_gradients_equal_the_unpacked_sum(model, examples, small_tokenizer, sizes):
    groups, at = [], 0
    for n in sizes:
        groups.append(examples[at:at + n])
        at += n
    packed = _stack([pack(g, T, small_tokenizer.pad_id, K) for g in groups])
    unpacked = _stack([pad(ex, T, small_tokenizer.pad_id) for g in groups for ex in g])
    loss_p, ce_p, mask_p, grads_p = _loss_and_grads(model, packed)
    loss_u, ce_u, _, grads_u = _loss_and_grads(model, unpacked)
    assert mask_p.sum() == sum(sizes)
    np.testing.assert_allclose(ce_p[mask_p > 0], ce_u, rtol=1e-5, atol=1e-6)   # slot by slot, in order
    np.testing.assert_allclose(loss_p, loss_u, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), grads_p, grads_u)


def test_segments_never_attend_to_each_other(model, examples, small_tokenizer):
    group = examples[:3]
    before = _stack([pack(group, T, small_tokenizer.pad_id, K)])
    after = {k: np.array(v) for k, v in before.items()}
    first = len(group[0])
    after["tokens"][0, :first - 1] = (after["tokens"][0, :first - 1] + 1) % small_tokenizer.vocab_size
    ce_before = np.asarray(_cls_sum(model, before)[1][0])
    ce_after = np.asarray(_cls_sum(model, {k: jnp.asarray(v) for k, v in after.items()})[1][0])
    assert ce_before[0] != ce_after[0]
    assert ce_before[1:].tobytes() == ce_after[1:].tobytes()      # bitwise


def test_pack_refuses_what_does_not_fit(examples, small_tokenizer):
    with pytest.raises(ValueError, match="do not fit 2 label slots"):
        pack(examples[:3], T, small_tokenizer.pad_id, 2)
    with pytest.raises(ValueError, match="packed examples need"):
        pack(examples * 4, T, small_tokenizer.pad_id, 48)


def _rows(n, prefix):
    return ListSource([{"text": f"{prefix} request number {i}" + " please" * (i % 6), "label": i % 2, "id": i}
                       for i in range(n)], prefix)


def _chats(n):
    return ListSource([{"messages": [{"role": "user", "content": f"Repeat {i}"},
                                     {"role": "assistant", "content": f"{i} " * (1 + i % 5)}]} for i in range(n)])


def _batches(tok, steps=12, **kw):
    task_b = TASK.__class__(name="b", domain="b", messages=(("user", "Dangerous? {text}"),))
    cls = [(_rows(37, "a"), ClassificationEncoder(TASK, tok, T, task_id=0), 1.0),
           (_rows(23, "b"), ClassificationEncoder(task_b, tok, T, task_id=1), 1.0)]
    instr = (_chats(29), InstructionEncoder(CHAT, tok, T, task_id=2), True)
    return train_batches(cls, instr, make_schedule("linear", start=1.0, end=0.25, steps=steps), batch_size=8,
                         num_steps=steps, length=T, pad_id=tok.pad_id, seed=5, pack_classification=K, **kw)


def test_the_packed_mixture_is_exact_regenerable_and_resumable(small_tokenizer):
    ds = _batches(small_tokenizer)
    straight = [ds[s] for s in range(12)]
    for s, batch in enumerate(straight):
        expected = int(np.floor((1.0 - 0.75 * s / 12) * 8 + 0.5))
        assert int((batch["kind"] == CLASSIFICATION).sum()) == expected          # rows, as without packing
        assert batch["label"].shape == (8, K) and batch["tokens"].shape == (8, T)
        cls = batch["kind"] == CLASSIFICATION
        slots = batch["label"] >= 0
        assert slots[~cls].sum() == 0 and (slots[cls].sum(axis=1) >= 1).all()
        assert slots[cls].sum() > cls.sum()                                     # several examples a row
        # Every used slot's label position holds its example's label token as the target.
        rows, cols = np.nonzero(slots)
        pos = batch["label_position"][rows, cols]
        target = batch["targets"][rows, pos]
        want = np.where(batch["label"][rows, cols] == 1, batch["positive_id"][rows, cols],
                        batch["negative_id"][rows, cols])
        np.testing.assert_array_equal(target, want)
        assert (batch["kind"] == INSTRUCTION).sum() == 8 - cls.sum()
    fresh = _batches(small_tokenizer)
    for s in (9, 2):
        for key in straight[s]:
            np.testing.assert_array_equal(fresh[s][key], straight[s][key])
    first = iter(_batches(small_tokenizer))
    for _ in range(5):
        next(first)
    resumed = iter(_batches(small_tokenizer))
    resumed.set_state(first.get_state())
    for s in range(5, 12):
        got = next(resumed)
        for key in got:
            np.testing.assert_array_equal(got[key], straight[s][key], err_msg=f"step {s} {key}")


def test_every_example_is_packed_once_per_epoch(small_tokenizer):
    src = _rows(37, "a")
    stream = PackedStream(src, ClassificationEncoder(TASK, small_tokenizer, T), T, small_tokenizer.pad_id, seed=1,
                          max_items=K, slots=K)
    seen, j = 0, 0
    while seen < 37:
        row = stream[j]
        used = int((row["label"] >= 0).sum())
        assert 1 <= used <= K and row["segment_ids"].max() == used
        seen += used
        j += 1
    assert seen == 37 and j < 37


def test_the_sharded_step_trains_on_packed_rows_and_counts_examples(small_tokenizer):
    import optax

    from monitor_jax.parallel import make_mesh
    from monitor_jax.train.step import LossConfig, init_state, jit_train_step, make_train_step

    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    cfg = tiny_config(small_tokenizer.vocab_size)
    model = create_model(cfg, mesh=mesh, seed=2)
    optimizer = optax.adamw(1e-3)
    state = init_state(model, optimizer, mesh)
    step = make_train_step(nnx.graphdef(model), optimizer, LossConfig(chunk_size=32, grad_accum=2, num_tasks=2),
                           optax.constant_schedule(1.0), optax.constant_schedule(1.0))
    data = _batches(small_tokenizer)
    jitted = jit_train_step(step, state, mesh, data[0], cfg.sharding_rules)
    with jax.set_mesh(mesh):
        for s in range(3):
            state, m = jitted(state, dict(data[s]))
            m = jax.device_get(m)
            examples = int((data[s]["label"] >= 0).sum())
            assert m["cls_rows"] == examples and m["task_rows"].sum() == examples
            assert np.isfinite(m["loss"]) and m["cls_loss"] > 0
    assert jitted._cache_size() == 1


def test_a_packed_run_resumes_to_the_uninterrupted_parameters(tmp_path, demo_tokenizer):
    """The demo config with data.pack_classification: train, pause, resume = straight through; the metrics
    count the classification examples, several a row."""
    import json

    from monitor_jax.commands.train import train
    from tests.train_helpers import run_config

    def config(workdir, **kw):
        c = run_config(workdir, demo_tokenizer, steps=6, **kw)
        c.data.max_length, c.loss.chunk_size, c.data.pack_classification = 256, 64, 4
        return c

    straight = train(config(tmp_path / "straight"))
    first = train(config(tmp_path / "resumed", run_steps=3))
    assert first.status == "paused" and first.step == 3
    second = train(config(tmp_path / "resumed"))
    assert straight.status == second.status == "finished" and straight.compilations == 1
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                 jax.device_get(straight.state.params), jax.device_get(second.state.params))
    rows = [json.loads(line) for line in open(tmp_path / "straight" / "metrics.jsonl")]
    cls_rows = [r["train/cls_rows"] for r in rows if "train/cls_rows" in r]
    assert len(cls_rows) == 6 and min(cls_rows) > 6       # r = 0.75 of 8 rows = 6 rows, more examples


def test_the_packed_real_demo_holds_more_real_tokens_in_the_same_positions(smollm2_dir):
    """configs/demo_real_packed.py against configs/demo_real.py, on the real tokenizer and the demo rows: the
    same positions a step (8 x 256 against 16 x 128), more of them real tokens and more classification
    examples a step (the figures in docs/benchmarks.md come from runs of these two configs)."""
    import runpy
    from pathlib import Path

    from monitor_jax import assemble
    from monitor_jax.config import validate

    repo = Path(__file__).resolve().parents[1]
    stats = {}
    for name in ("demo_real", "demo_real_packed"):
        c = runpy.run_path(str(repo / "configs" / f"{name}.py"))["get_config"]()
        validate(c, 1)
        c.model.hf_path = str(smollm2_dir)
        tok, _ = assemble.tokenizer(c)
        data = assemble.train_data(c, tok)
        batches = [data[s] for s in range(10)]
        positions = {b["tokens"].size for b in batches}
        real = sum(int((b["segment_ids"] > 0).sum()) for b in batches) / sum(b["tokens"].size for b in batches)
        cls_examples = sum(int((b["label"] >= 0).sum()) for b in batches) / len(batches)
        stats[name] = positions, real, cls_examples
    assert stats["demo_real"][0] == stats["demo_real_packed"][0] == {16 * 128}
    assert stats["demo_real_packed"][1] > stats["demo_real"][1] + 0.1, stats
    assert stats["demo_real_packed"][2] > stats["demo_real"][2], stats
