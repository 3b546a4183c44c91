"""The jitted logit-scoring loop.

A monitor's score for a row is the log-odds logit(positive) − logit(negative)
at the answer position (the last prompt token). `score_batch` is one jitted
function: forward to hidden states, gather the answer position, unembed those
[B, D] rows only. Rows are grouped into length buckets, so the number of
compilations is bounded by the number of buckets; the last partial batch of a
bucket is padded with masked rows that never reach the results.

Packed (`pack_max` > 0): several prompts share one row of the largest bucket's
length (segment ids 1..k keep them from attending to each other; positions
restart per segment), each with its own answer position, so a batch computes
mostly real tokens whatever the length mix. Compiled shapes: row length (the
largest bucket; the stream's last batch the smallest that holds what is left)
× answer slots per row (a power of two up to `pack_max`).
"""
from __future__ import annotations

import bisect
import dataclasses
from typing import Callable, Iterable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from monitor_jax.data.encode import Encoded, pack
from monitor_jax.data.pipeline import first_fit_decreasing, length_batches
from monitor_jax.model.answer import answer_logits
from monitor_jax.parallel.multihost import global_batch

DEFAULT_BUCKETS = (64, 128, 256, 512, 1024, 2048)
PACK_WINDOW_BATCHES = 4   # packed: batches of prompts first-fit together, of which the fullest batch of rows is scored
SCORED_FIELDS = ("tokens", "segment_ids", "label_position", "positive_id", "negative_id")   # what score_batch reads


def score_batch(graphdef: nnx.GraphDef, params: nnx.State, batch: dict) -> dict:
    """Per row: log-odds, P(positive) over the two labels, and P(positive), P(negative) over the vocabulary
    (their sum is the mass the model puts on the two labels: low means it would write something else)."""
    model = nnx.merge(graphdef, params)
    hidden_BxTxD = model.hidden_states(batch["tokens"], segment_ids=batch["segment_ids"])
    # One answer position per row ([B]), or K per packed row ([B, K]); outputs take the positions' shape.
    logits_NxV, pos_logit_N, neg_logit_N = answer_logits(model.unembed, hidden_BxTxD, batch["label_position"],
                                                         batch["positive_id"], batch["negative_id"])
    log_odds_N = pos_logit_N - neg_logit_N
    norm_N = jax.nn.logsumexp(logits_NxV, axis=-1)
    out = dict(log_odds=log_odds_N, p_positive=jax.nn.sigmoid(log_odds_N),
               p_positive_vocab=jnp.exp(pos_logit_N - norm_N), p_negative_vocab=jnp.exp(neg_logit_N - norm_N))
    return {k: v.reshape(batch["label_position"].shape) for k, v in out.items()}


@dataclasses.dataclass
class Scored:
    index: int          # position of the row in the input stream
    log_odds: float
    p_positive: float
    p_positive_vocab: float
    p_negative_vocab: float = 0.0

    @property
    def label_mass(self) -> float:
        """P(positive) + P(negative) over the whole vocabulary at the answer position."""
        return self.p_positive_vocab + self.p_negative_vocab


class Scorer:
    """Scores streams of encoded prompts in fixed-shape, length-bucketed batches on `mesh`."""

    def __init__(self, graphdef: nnx.GraphDef, mesh: Mesh, batch_size: int,
                 buckets: Sequence[int] = DEFAULT_BUCKETS, pad_id: int = 0, rules=None, pack_max: int = 0):
        """`pack_max` > 0: pack up to that many prompts into each row of the largest bucket's length."""
        from monitor_jax.parallel.sharding import DEFAULT_RULES

        self.mesh, self.batch_size, self.pad_id, self.pack_max = mesh, batch_size, pad_id, pack_max
        self.real_tokens = self.computed_positions = 0     # what the batches held: real tokens / all positions
        self.buckets = tuple(sorted(buckets))
        self.rules = rules or DEFAULT_RULES
        self.process, self.processes = jax.process_index(), jax.process_count()
        if batch_size % self.processes:
            raise ValueError(f"eval batch size {batch_size} is not divisible by {self.processes} processes")
        self._score = jax.jit(lambda params, batch: score_batch(graphdef, params, batch),
                              out_shardings=NamedSharding(mesh, PartitionSpec()))

    @property
    def max_length(self) -> int:
        return self.buckets[-1]

    def compilations(self) -> int:
        return self._score._cache_size()

    def _bucket(self, n: int) -> int:
        i = bisect.bisect_left(self.buckets, n)
        if i == len(self.buckets):
            raise ValueError(f"a prompt of {n} tokens is longer than the largest bucket {self.buckets[-1]}; "
                             f"encode with max_length <= {self.buckets[-1]} (truncation is counted) or add a bucket")
        return self.buckets[i]

    def _run(self, params, packs: list[list[tuple[int, Encoded]]], length: int, slots: int = 1) -> list[Scored]:
        """Scores up to a batch of rows of `length` tokens, each holding the prompts of one pack (one prompt a
        row when unpacked; up to `slots` when packed)."""
        b = self.batch_size
        # Rows as training packs them (encode.pack: segment ids 1..k, answer positions offset into the row), then
        # padding rows (no prompts) up to the batch size.
        rows = [pack([ex for _, ex in row], length, self.pad_id, slots) for row in packs]
        rows += [pack([], length, self.pad_id, slots)] * (b - len(packs))
        arrays = {f: np.stack([row[f] for row in rows]) for f in SCORED_FIELDS}
        # Empty slots and padding rows read position 0 of their row; their outputs are dropped below.
        arrays["label_position"] = np.maximum(arrays["label_position"], 0)
        self.real_tokens += sum(len(ex) for row in packs for _, ex in row)
        self.computed_positions += b * length
        local = b // self.processes
        sl = slice(self.process * local, (self.process + 1) * local)
        out = jax.device_get(self._score(params, global_batch({f: v[sl] for f, v in arrays.items()}, self.mesh,
                                                              self.rules)))
        return [Scored(idx, *(float(out[f][r, j]) for f in ("log_odds", "p_positive", "p_positive_vocab",
                                                             "p_negative_vocab")))
                for r, row in enumerate(packs) for j, (idx, _) in enumerate(row)]

    def _fullest_rows(self, pending: list[tuple[int, Encoded]], length: int) -> list[list[tuple[int, Encoded]]]:
        """`pending` first-fit decreasing into rows of `length`, the fullest first."""
        rows = [[pending[i] for i in row] for row in
                first_fit_decreasing([len(ex) for _, ex in pending], length, self.pack_max)]
        return sorted(rows, key=lambda row: -sum(len(ex) for _, ex in row))

    def _packed_batches(self, examples: Iterable[Encoded]) -> Iterator[tuple[list[list[tuple[int, Encoded]]], int]]:
        """(rows, row length) batches. Prompts gather until they hold PACK_WINDOW_BATCHES batches of tokens;
        first-fit decreasing packs them into rows of the largest bucket and the fullest batch of rows goes out, the rest
        wait for more prompts (a window of one batch leaves rows short: there are few prompts to choose from).
        At the end of the stream, what is left goes into rows of the smallest bucket that holds it in one batch
        (the last batch would otherwise be mostly padding at the largest bucket's length)."""
        pending: list[tuple[int, Encoded]] = []
        tokens = 0
        budget = PACK_WINDOW_BATCHES * self.batch_size * self.max_length      # tokens
        count = PACK_WINDOW_BATCHES * self.batch_size * self.pack_max         # prompts

        def take(rows, length):
            nonlocal pending, tokens
            pending = [x for row in rows[self.batch_size:] for x in row]
            tokens = sum(len(ex) for _, ex in pending)
            return rows[:self.batch_size], length

        for item in enumerate(examples):
            self._bucket(len(item[1]))          # a prompt longer than the largest bucket is an error, as unpacked
            pending.append(item)
            tokens += len(item[1])
            if tokens >= budget or len(pending) >= count:
                yield take(self._fullest_rows(pending, self.max_length), self.max_length)
        while pending:
            longest = max(len(ex) for _, ex in pending)
            for length in self.buckets[bisect.bisect_left(self.buckets, longest):]:
                rows = self._fullest_rows(pending, length)
                if len(rows) <= self.batch_size or length == self.max_length:
                    yield take(rows, length)
                    break

    def score(self, params, examples: Iterable[Encoded]) -> Iterator[Scored]:
        """Scores in completion order (use `.index` to join back); streams, holding one batch per bucket (or,
        packed, about PACK_WINDOW_BATCHES batches of prompts)."""
        if self.pack_max:
            for packs, length in self._packed_batches(examples):
                # Answer slots per row: the batch's fullest row, rounded up to a power of two (a bounded number
                # of compiled shapes), so a batch of rows holding two prompts each does not unembed `pack_max`.
                most = max(len(row) for row in packs)
                yield from self._run(params, packs, length, min(1 << (most - 1).bit_length(), self.pack_max))
            return
        for length, rows in length_batches(enumerate(examples), lambda row: self._bucket(len(row[1])),
                                           self.batch_size):
            yield from self._run(params, [[row] for row in rows], length)

    def score_all(self, params, examples: Iterable[Encoded],
                  progress: Callable[[int], object] | None = None) -> list[Scored]:
        """Scores in input order; `progress(1)` is called as each row completes (e.g. a tqdm bar's update)."""
        out = []
        for s in self.score(params, examples):
            out.append(s)
            if progress is not None:
                progress(1)
        return sorted(out, key=lambda s: s.index)
