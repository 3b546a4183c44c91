"""The jitted logit-scoring loop.

A monitor's score for a row is the log-odds logit(positive) − logit(negative)
at the answer position (the last prompt token). `score_batch` is one jitted
function: forward to hidden states, gather the answer position, unembed those
[B, D] rows only. Rows are grouped into length buckets, so the number of
compilations is bounded by the number of buckets; the last partial batch of a
bucket is padded with masked rows that never reach the results.
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

from monitor_jax.data.encode import Encoded
from monitor_jax.data.pipeline import length_batches
from monitor_jax.model.answer import answer_logits
from monitor_jax.parallel.multihost import global_batch

DEFAULT_BUCKETS = (64, 128, 256, 512, 1024, 2048)


def score_batch(graphdef: nnx.GraphDef, params: nnx.State, batch: dict) -> dict:
    """Per row: log-odds, P(positive) over the two labels, and P(positive), P(negative) over the vocabulary
    (their sum is the mass the model puts on the two labels: low means it would write something else)."""
    model = nnx.merge(graphdef, params)
    hidden_BxTxD = model.hidden_states(batch["tokens"], segment_ids=batch["segment_ids"])
    logits_BxV, pos_logit_B, neg_logit_B = answer_logits(model.unembed, hidden_BxTxD, batch["label_position"],
                                                         batch["positive_id"], batch["negative_id"])
    log_odds_B = pos_logit_B - neg_logit_B
    norm_B = jax.nn.logsumexp(logits_BxV, axis=-1)
    return dict(log_odds=log_odds_B, p_positive=jax.nn.sigmoid(log_odds_B),
                p_positive_vocab=jnp.exp(pos_logit_B - norm_B), p_negative_vocab=jnp.exp(neg_logit_B - norm_B))


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
                 buckets: Sequence[int] = DEFAULT_BUCKETS, pad_id: int = 0, rules=None):
        from monitor_jax.parallel.sharding import DEFAULT_RULES

        self.mesh, self.batch_size, self.pad_id = mesh, batch_size, pad_id
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

    def _run(self, params, rows: list[tuple[int, Encoded]], length: int) -> list[Scored]:
        b = self.batch_size
        n = len(rows)
        arrays = dict(tokens=np.full((b, length), self.pad_id, np.int32), segment_ids=np.zeros((b, length), np.int32),
                      label_position=np.zeros(b, np.int32), positive_id=np.zeros(b, np.int32),
                      negative_id=np.zeros(b, np.int32))
        for r, (_, ex) in enumerate(rows):
            arrays["tokens"][r, :len(ex)] = ex.tokens
            arrays["segment_ids"][r, :len(ex)] = 1
            arrays["label_position"][r] = ex.label_position
            arrays["positive_id"][r], arrays["negative_id"][r] = ex.positive_id, ex.negative_id
        # Padding rows (r >= n) are all-padding prompts; their outputs are dropped below.
        local = b // self.processes
        sl = slice(self.process * local, (self.process + 1) * local)
        out = self._score(params, global_batch({k: v[sl] for k, v in arrays.items()}, self.mesh, self.rules))
        out = jax.device_get(out)
        return [Scored(idx, float(out["log_odds"][r]), float(out["p_positive"][r]), float(out["p_positive_vocab"][r]),
                       float(out["p_negative_vocab"][r])) for r, (idx, _) in enumerate(rows[:n])]

    def score(self, params, examples: Iterable[Encoded]) -> Iterator[Scored]:
        """Scores in completion order (use `.index` to join back); streams, holding one batch per bucket."""
        for length, rows in length_batches(enumerate(examples), lambda row: self._bucket(len(row[1])),
                                           self.batch_size):
            yield from self._run(params, rows, length)

    def score_all(self, params, examples: Iterable[Encoded],
                  progress: Callable[[int], object] | None = None) -> list[Scored]:
        """Scores in input order; `progress(1)` is called as each row completes (e.g. a tqdm bar's update)."""
        out = []
        for s in self.score(params, examples):
            out.append(s)
            if progress is not None:
                progress(1)
        return sorted(out, key=lambda s: s.index)
