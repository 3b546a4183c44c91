"""Scheduled mixture: exact per-step composition, regeneration, resume, multi-process slices."""
import numpy as np
import pytest

from monitor_jax.data.encode import CLASSIFICATION, INSTRUCTION, ClassificationEncoder, InstructionEncoder
from monitor_jax.data.mixing import classification_rows, exact_counts, make_schedule
from monitor_jax.data.pipeline import PackedStream, train_batches
from monitor_jax.data.sources import ListSource
from monitor_jax.data.tasks import ClassificationTask, InstructionTask

B, STEPS, T = 8, 24, 64
TASK_A = ClassificationTask(name="a", domain="a", messages=(("user", "Harmful? {text}"),))
TASK_B = ClassificationTask(name="b", domain="b", messages=(("user", "Dangerous? {text}"),))
CHAT = InstructionTask(name="chat")

SCHEDULES = {
    "constant": dict(kind="constant", value=0.4),
    "linear": dict(kind="linear", start=1.0, end=0.0, steps=STEPS),
    "cosine": dict(kind="cosine", start=0.9, end=0.1, steps=STEPS),
    "staged": dict(kind="staged", boundaries=(5, 15), values=(1.0, 0.25, 0.5)),
    "sequential": dict(kind="sequential", switch_step=10),
}


def _rows(n, prefix):
    return ListSource([{"text": f"{prefix} {i}", "label": i % 2, "id": i} for i in range(n)], prefix)


def _chats(n):
    return ListSource([{"messages": [{"role": "user", "content": f"Repeat {i}"},
                                     {"role": "assistant", "content": f"{i} " * (1 + i % 5)}]} for i in range(n)],
                      "chats")


def _batches(tok, schedule, weights=(1.0, 1.0), packed=False, **kw):
    cls = [(_rows(37, "a"), ClassificationEncoder(TASK_A, tok, T, task_id=0), weights[0]),
           (_rows(23, "b"), ClassificationEncoder(TASK_B, tok, T, task_id=1), weights[1])]
    instr = (_chats(29), InstructionEncoder(CHAT, tok, T, task_id=2), packed)
    return train_batches(cls, instr, make_schedule(**schedule), batch_size=B, num_steps=STEPS, length=T,
                         pad_id=tok.pad_id, seed=5, **kw)


def _expected_n_cls(schedule, step):
    r = {"constant": lambda s: 0.4, "linear": lambda s: 1 - s / STEPS,
         "cosine": lambda s: 0.1 + 0.8 * (1 + np.cos(np.pi * s / STEPS)) / 2,
         "staged": lambda s: 1.0 if s < 5 else 0.25 if s < 15 else 0.5,
         "sequential": lambda s: 1.0 if s < 10 else 0.0}[schedule](step)
    return int(np.floor(r * B + 0.5 + 1e-6))


@pytest.mark.parametrize("name", SCHEDULES)
def test_every_step_holds_exactly_round_r_times_b_classification_rows(small_tokenizer, name):
    ds = _batches(small_tokenizer, SCHEDULES[name])
    for step in range(STEPS):
        batch = ds[step]
        n_cls = int((batch["kind"] == CLASSIFICATION).sum())
        assert n_cls == _expected_n_cls(name, step), (name, step)
        assert int((batch["kind"] == INSTRUCTION).sum()) == B - n_cls
        assert batch["tokens"].shape == (B, T)


def test_schedules_stay_in_unit_interval_and_reject_bad_config():
    for spec in SCHEDULES.values():
        r = make_schedule(**spec)(np.arange(100))
        assert r.min() >= 0 and r.max() <= 1
    with pytest.raises(ValueError, match="choose one of"):
        make_schedule("exponential")
    with pytest.raises(ValueError, match="3 values need 2 boundaries, got 1"):
        make_schedule("staged", boundaries=(4,), values=(1, 0, 1))


def test_tasks_share_classification_rows_exactly_by_weight(small_tokenizer):
    ds = _batches(small_tokenizer, dict(kind="constant", value=1.0), weights=(3.0, 1.0))
    mixture = ds.parents[0]
    mixture.block_size = 16  # so the 192 rows of this run span whole blocks
    mixture._block.cache_clear()
    task_ids = np.concatenate([ds[s]["task_id"] for s in range(STEPS)])
    assert np.bincount(task_ids).tolist() == [144, 48]
    assert exact_counts([1, 1, 1], 10).tolist() == [4, 3, 3]


def test_step_is_regenerated_without_the_steps_before_it(small_tokenizer):
    sequential = [b for b, _ in zip(iter(_batches(small_tokenizer, SCHEDULES["linear"])), range(STEPS))]
    fresh = _batches(small_tokenizer, SCHEDULES["linear"])
    for step in (17, 3, 23):
        for key in sequential[step]:
            np.testing.assert_array_equal(fresh[step][key], sequential[step][key])


def test_resume_from_iterator_state_sees_the_same_batches(small_tokenizer):
    it = iter(_batches(small_tokenizer, SCHEDULES["cosine"], packed=True))
    straight = [next(it) for _ in range(STEPS)]
    first = iter(_batches(small_tokenizer, SCHEDULES["cosine"], packed=True))
    for _ in range(9):
        next(first)
    state = first.get_state()
    resumed = iter(_batches(small_tokenizer, SCHEDULES["cosine"], packed=True))   # a new process, say
    resumed.set_state(state)
    for step in range(9, STEPS):
        got = next(resumed)
        for key in got:
            np.testing.assert_array_equal(got[key], straight[step][key])


def test_two_processes_read_disjoint_slices_that_make_the_global_batch(small_tokenizer):
    whole = _batches(small_tokenizer, SCHEDULES["staged"])
    halves = [_batches(small_tokenizer, SCHEDULES["staged"], process_index=p, process_count=2) for p in (0, 1)]
    for step in range(STEPS):
        parts = [h[step] for h in halves]
        assert parts[0]["tokens"].shape == (B // 2, T)
        for key in whole[step]:
            np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), whole[step][key])
        # Classification rows are spread over the batch, so both halves get their share.
        n0, n1 = (int((p["kind"] == CLASSIFICATION).sum()) for p in parts)
        assert abs(n0 - n1) <= 1


def test_global_batch_assembles_process_slices(small_tokenizer):
    from monitor_jax.parallel import make_mesh
    from monitor_jax.parallel.multihost import global_batch

    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    local = _batches(small_tokenizer, SCHEDULES["constant"])[3]
    arrays = global_batch(local, mesh)
    assert arrays["tokens"].shape == (B, T)
    assert arrays["tokens"].sharding.spec[0] == ("data", "fsdp")
    np.testing.assert_array_equal(np.asarray(arrays["weights"]), local["weights"])


def test_packed_instruction_stream(small_tokenizer):
    enc = InstructionEncoder(CHAT, small_tokenizer, T)
    src = _chats(29)
    stream = PackedStream(src, enc, T, small_tokenizer.pad_id, seed=1)
    seen = []
    j = 0
    while len(seen) < 2 * 29:  # two epochs' worth of packs
        row = stream[j]
        assert row["segment_ids"].max() >= 1 and (row["segment_ids"] > 0).sum() <= T
        seen.extend(row["tokens"][(row["positions"] == 0) & (row["segment_ids"] > 0)].tolist())
        j += 1
    # Every example appears once per epoch, and packing beats one example per row.
    assert len(seen) == 2 * 29 and j < 2 * 29
    assert classification_rows(make_schedule("constant", value=0.5), np.arange(3), 5).tolist() == [3, 3, 3]


def test_where_filter_counts_what_it_drops():
    from monitor_jax.data.sources import open_source

    src = open_source({"kind": "demo", "domain": "chem_harm", "split": "test", "n": 40, "where": {"label": 1}})
    assert len(src) == 20 and all(src[i]["label"] == 1 for i in range(len(src)))
    assert src.report()["kept"] == 20 and src.report()["dropped"] == 20
