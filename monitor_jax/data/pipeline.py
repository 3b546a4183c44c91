"""grain pipelines: per-source encoded streams, packing, the scheduled mixture, batches.

    source --(seeded shuffle, repeat)--> row --(encode, pad | pack)--> fixed-shape example
    streams --(ScheduledMixture: (step, slot) -> (stream, index))--> .batch(local B) --> host batch

Every stage is a grain `MapDataset`, so element i is computed from i alone:
resuming at step s is `iterator.set_state(...)` (or indexing batch s), and the
iterator state is what grain's orbax handler checkpoints.
"""
from __future__ import annotations

import functools
import threading
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, TypeVar

import grain
import numpy as np

from monitor_jax.data.encode import ClassificationEncoder, Encoded, InstructionEncoder, pack, pad
from monitor_jax.data.mixing import ScheduledMixture, Schedule
from monitor_jax.data.sources import describe
from monitor_jax.errors import DataError

T = TypeVar("T")


class ListSource:
    """Rows held in memory (the demo suite, tests): a grain random-access source."""

    def __init__(self, rows: Sequence[Mapping[str, Any]], name: str = "rows"):
        self.rows, self.name = list(rows), name

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Mapping[str, Any]:
        return self.rows[i]

    def describe(self, i: int) -> str:
        return f"{self.name} row {i}"


def shuffled_indices(n: int, seed: int) -> grain.MapDataset:
    """0..n-1, reshuffled every epoch, forever (grain reseeds the shuffle per epoch)."""
    if n == 0:
        raise DataError("a training source has no rows")
    return grain.MapDataset.range(n).shuffle(seed=seed).repeat()


def encoded_stream(source, encoder: Callable[[Mapping, str], Encoded], length: int, pad_id: int,
                   seed: int) -> grain.MapDataset:
    """Infinite stream of padded examples of one source."""
    return shuffled_indices(len(source), seed).map(
        lambda i: pad(encoder(source[i], describe(source, i)), length, pad_id))


class PackedStream(grain.MapDataset):
    """Instruction examples packed greedily (next-fit, in shuffled order) into rows of `length`.

    Packs never span epochs, so pack boundaries of epoch e depend only on that
    epoch's order and the encoded lengths (computed once): pack j is found
    without building the packs before it.
    """

    def __init__(self, source, encoder: Callable[[Mapping, str], Encoded], length: int, pad_id: int, seed: int):
        super().__init__()
        self.source, self.encoder, self.length, self.pad_id = source, encoder, length, pad_id
        self.order = shuffled_indices(len(source), seed)
        self.n = len(source)
        self.lengths = np.array([len(encoder(source[i], describe(source, i))) for i in range(self.n)])
        self._epoch_starts = [0]   # first pack index of each epoch computed so far
        self._lock = threading.Lock()  # grain prefetches elements from several threads

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state):
        self.__dict__.update(state, _lock=threading.Lock())

    def __len__(self) -> int:
        return np.iinfo(np.int64).max

    def __str__(self) -> str:
        return f"PackedStream(length={self.length}, rows={self.n})"

    @functools.lru_cache(maxsize=4)
    def _packs(self, epoch: int) -> np.ndarray:
        """Start offsets (within the epoch's order) of each pack, plus the end."""
        order = [self.order[epoch * self.n + k] for k in range(self.n)]
        starts, used = [0], 0
        for k, idx in enumerate(order):
            n = int(self.lengths[idx])
            if used + n > self.length and used > 0:
                starts.append(k)
                used = 0
            used += n
        return np.array(starts + [self.n])

    def __getitem__(self, j):
        if isinstance(j, slice):
            return self.slice(j)
        with self._lock:
            while len(self._epoch_starts) <= 1 or self._epoch_starts[-1] <= j:
                e = len(self._epoch_starts) - 1
                self._epoch_starts.append(self._epoch_starts[-1] + len(self._packs(e)) - 1)
            e = int(np.searchsorted(self._epoch_starts, j, side="right")) - 1
        bounds = self._packs(e)
        k = j - self._epoch_starts[e]
        idx = [self.order[e * self.n + m] for m in range(bounds[k], bounds[k + 1])]
        return pack([self.encoder(self.source[i], describe(self.source, i)) for i in idx], self.length, self.pad_id)


def length_batches(items: Iterable[T], bucket_of: Callable[[T], int], batch_size: int
                   ) -> Iterator[tuple[int, list[T]]]:
    """(bucket length, items) batches of `batch_size` items sharing a length bucket, each yielded as soon as it
    is full; the partial batches last, by length. Holds at most one partial batch per bucket (the scorer and
    the sampler stream through this)."""
    pending: dict[int, list[T]] = {}
    for item in items:
        length = bucket_of(item)
        pending.setdefault(length, []).append(item)
        if len(pending[length]) == batch_size:
            yield length, pending.pop(length)
    yield from sorted(pending.items(), key=lambda kv: kv[0])


def stack(examples: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.stack([ex[k] for ex in examples]) for k in examples[0]}


def train_batches(classification: Sequence[tuple[Any, ClassificationEncoder, float]],
                  instruction: tuple[Any, InstructionEncoder, bool] | None, schedule: Schedule, *,
                  batch_size: int, num_steps: int, length: int, pad_id: int, seed: int = 0,
                  process_index: int = 0, process_count: int = 1) -> grain.MapDataset:
    """Batch s of the returned dataset is this process's slice of global step s.

    `classification`: (source, encoder, weight) per task; `instruction`:
    (source, encoder, packed) or None. Streams get distinct seeds derived from
    `seed` and their position, so adding a task does not reshuffle the others.
    """
    cls_streams = [encoded_stream(src, enc, length, pad_id, seed=seed * 1000 + k)
                   for k, (src, enc, _) in enumerate(classification)]
    instr = None
    if instruction is not None:
        src, enc, packed = instruction
        instr = (PackedStream(src, enc, length, pad_id, seed=seed * 1000 + 999) if packed
                 else encoded_stream(src, enc, length, pad_id, seed=seed * 1000 + 999))
    mixture = ScheduledMixture(cls_streams, [w for _, _, w in classification], instr, schedule, batch_size,
                               num_steps, seed=seed, process_index=process_index, process_count=process_count)
    return mixture.batch(mixture.local_batch, batch_fn=stack)


def open_rows(spec: Mapping[str, Any]):
    """A source from its config: {"kind": "demo", "domain", "split", "n"} or a `sources.open_source` spec.

    An optional `"where": {field: value or [values]}` keeps only matching rows,
    through `FilteredSource`, which counts and logs what it drops.
    """
    spec = dict(spec)
    where = spec.pop("where", None)
    if spec.get("kind") == "demo":
        from monitor_jax.data import demo

        missing = [k for k in ("domain", "split") if k not in spec]
        if missing:
            raise DataError(f"demo source {spec} lacks {missing}")
        domain, split, n = spec["domain"], spec["split"], spec.get("n")
        rows = (demo.instruction_rows(split, seed=spec.get("seed", 0), n=n) if domain == "demo_instruct"
                else demo.demo_rows(domain, split, seed=spec.get("seed", 0), n=n))
        source = ListSource(rows, f"demo:{domain}/{split}")
    else:
        from monitor_jax.data.sources import open_source

        source = open_source(spec)
    if where:
        from monitor_jax.data.sources import FilteredSource

        allowed = {k: set(v) if isinstance(v, (list, tuple)) else {v} for k, v in dict(where).items()}
        source = FilteredSource(source, lambda row: all(row.get(k) in vs for k, vs in allowed.items()),
                                name=f"{getattr(source, 'name', spec.get('kind'))} where {dict(where)}")
    return source
