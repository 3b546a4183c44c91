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


def shuffled_indices(n: int, seed: int) -> grain.MapDataset:
    """0..n-1, reshuffled every epoch, forever (grain reseeds the shuffle per epoch)."""
    if n == 0:
        raise DataError("a training source has no rows")
    return grain.MapDataset.range(n).shuffle(seed=seed).repeat()


def encoded_stream(source, encoder: Callable[[Mapping, str], Encoded], length: int, pad_id: int,
                   seed: int, slots: int = 0) -> grain.MapDataset:
    """Infinite stream of padded examples of one source (`slots`: `encode.pad`)."""
    return shuffled_indices(len(source), seed).map(
        lambda i: pad(encoder(source[i], describe(source, i)), length, pad_id, slots))


# Classification examples are packed first-fit decreasing within windows of this many (PackedStream).
PACK_WINDOW = 256


class PackedStream(grain.MapDataset):
    """Examples of one source packed into rows of `length`, at most `max_items` a row (classification rows: one
    label slot each, `slots` per row): next-fit in shuffled order, or with `window` > 0 first-fit decreasing
    within each window of that many examples of the shuffled order, the window's packs in a seeded order
    (fuller rows on ragged data, still a shuffled stream).

    Packs never span epochs, so the packs of epoch e depend only on that
    epoch's order and the encoded lengths (computed once): pack j is found
    without building the packs before it.
    """

    def __init__(self, source, encoder: Callable[[Mapping, str], Encoded], length: int, pad_id: int, seed: int,
                 max_items: int = 0, slots: int = 0, window: int = 0):
        super().__init__()
        self.source, self.encoder, self.length, self.pad_id = source, encoder, length, pad_id
        self.max_items, self.slots, self.window, self.seed = max_items or np.iinfo(np.int64).max, slots, window, seed
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
    def _packs(self, epoch: int) -> list[list[int]]:
        """Each pack of the epoch as positions in the epoch's order."""
        lengths = [int(self.lengths[self.order[epoch * self.n + k]]) for k in range(self.n)]
        if self.window:
            packs = []
            for w0 in range(0, self.n, self.window):
                bins = first_fit_decreasing(lengths[w0:w0 + self.window], self.length, self.max_items)
                shuffle = np.random.default_rng([self.seed, epoch, w0]).permutation(len(bins))
                packs += [sorted(w0 + i for i in bins[b]) for b in shuffle]
            return packs
        starts, used = [0], 0
        for k, n in enumerate(lengths):
            if (used + n > self.length or k - starts[-1] == self.max_items) and used > 0:
                starts.append(k)
                used = 0
            used += n
        starts.append(self.n)
        return [list(range(a, b)) for a, b in zip(starts[:-1], starts[1:])]

    def __getitem__(self, j):
        if isinstance(j, slice):
            return self.slice(j)
        with self._lock:
            while len(self._epoch_starts) <= 1 or self._epoch_starts[-1] <= j:
                e = len(self._epoch_starts) - 1
                self._epoch_starts.append(self._epoch_starts[-1] + len(self._packs(e)))
            e = int(np.searchsorted(self._epoch_starts, j, side="right")) - 1
        idx = [self.order[e * self.n + m] for m in self._packs(e)[j - self._epoch_starts[e]]]
        return pack([self.encoder(self.source[i], describe(self.source, i)) for i in idx], self.length, self.pad_id,
                    self.slots)


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


def first_fit_decreasing(lengths: Sequence[int], capacity: int, max_items: int) -> list[list[int]]:
    """Bins of item indices, longest items first, each item in the first bin with room: every bin's lengths
    sum to <= `capacity` and it holds <= `max_items` items. The first bins come out fullest."""
    bins: list[list[int]] = []
    free: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        n = lengths[i]
        if n > capacity:
            raise ValueError(f"an item of {n} does not fit a bin of {capacity}")
        for b, room in enumerate(free):
            if n <= room and len(bins[b]) < max_items:
                bins[b].append(i)
                free[b] -= n
                break
        else:
            bins.append([i])
            free.append(capacity - n)
    return bins


def stack(examples: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.stack([ex[k] for ex in examples]) for k in examples[0]}


def train_batches(classification: Sequence[tuple[Any, ClassificationEncoder, float]],
                  instruction: tuple[Any, InstructionEncoder, bool] | None, schedule: Schedule, *,
                  batch_size: int, num_steps: int, length: int, pad_id: int, seed: int = 0,
                  process_index: int = 0, process_count: int = 1, pack_classification: int = 0) -> grain.MapDataset:
    """Batch s of the returned dataset is this process's slice of global step s.

    `classification`: (source, encoder, weight) per task; `instruction`:
    (source, encoder, packed) or None. Streams get distinct seeds derived from
    `seed` and their position, so adding a task does not reshuffle the others.
    `pack_classification` = K > 0: each task's examples are packed, up to K a row, and every row carries K
    label slots; the mixture then shares sequence rows (the token budget), not examples, among tasks and
    between classification and instruction data.
    """
    k_slots = pack_classification
    cls_streams = [PackedStream(src, enc, length, pad_id, seed=seed * 1000 + k, max_items=k_slots, slots=k_slots,
                                window=PACK_WINDOW)
                   if k_slots else encoded_stream(src, enc, length, pad_id, seed=seed * 1000 + k)
                   for k, (src, enc, _) in enumerate(classification)]
    instr = None
    if instruction is not None:
        src, enc, packed = instruction
        instr = (PackedStream(src, enc, length, pad_id, seed=seed * 1000 + 999, slots=k_slots) if packed
                 else encoded_stream(src, enc, length, pad_id, seed=seed * 1000 + 999, slots=k_slots))
    mixture = ScheduledMixture(cls_streams, [w for _, _, w in classification], instr, schedule, batch_size,
                               num_steps, seed=seed, process_index=process_index, process_count=process_count)
    return mixture.batch(mixture.local_batch, batch_fn=stack)
