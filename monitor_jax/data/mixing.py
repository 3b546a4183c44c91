"""Scheduled mixing of classification and instruction rows, exact per step.

Step s of a run with global batch B holds exactly round(r(s)·B) classification
rows and B − that many instruction rows. Classification rows are shared among
tasks by weight in blocks with exact counts (levanter's block mixing); inside a
step, classification slots are spread evenly so every data-parallel shard gets
its share. Everything is a pure function of (seed, step, slot), so any step's
batch is regenerated without the steps before it and a resumed run sees
exactly the batches of an uninterrupted one.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping, Sequence

import grain
import numpy as np
import optax

from monitor_jax.errors import ConfigError
from monitor_jax.settings import setting


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The `data` config section: the training sources and their scheduled mixture."""
    max_length: int = setting(512, "tokens per training row", low=1)
    classification: list = setting([], "[{'task', 'source': {...}, 'weight'}]: classification sources, mixed by "
                                   "weight within the classification share", check=False)
    instruction: dict = setting({}, "{'task', 'source': {...}, 'pack': bool}: the instruction source ({} = none)",
                                check=False)
    mixing: dict = setting({"kind": "constant", "value": 1.0}, "r(step), the classification share of each batch: "
                           "make_schedule arguments", check=False)
    pack_classification: int = setting(0, "K > 0: up to K classification examples of a task in each row (one label "
                                       "slot each; r then shares rows, not examples); 0 = one example per row",
                                       low=0)
    seed: int = setting(0, "the mixture's and the shuffles' seed", low=0)

Schedule = Callable[[np.ndarray | int], np.ndarray]
# Each schedule kind and the parameters it takes (`optax_schedule` below).
SCHEDULE_PARAMS = {"constant": ("value",), "linear": ("start", "end", "steps"), "cosine": ("start", "end", "steps"),
                   "staged": ("boundaries", "values"), "sequential": ("switch_step",)}
SCHEDULES = tuple(SCHEDULE_PARAMS)


def check_schedule(spec: Mapping[str, Any], key: str, unit_interval: bool) -> None:
    """A ConfigError naming `key.param` for an unknown kind or parameter, a bad type, or (for a ratio,
    `unit_interval`) a value outside [0, 1]; weights must be >= 0. Nothing is clamped later."""
    kind = spec.get("kind")
    if kind not in SCHEDULE_PARAMS:
        raise ConfigError(f"{key}.kind={kind!r}; choose one of {SCHEDULES}")
    allowed = SCHEDULE_PARAMS[kind]
    for name in spec:
        if name != "kind" and name not in allowed:
            raise ConfigError(f"{key}.{name} is not a parameter of a {kind} schedule (it takes {', '.join(allowed)})")

    def number(name: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}.{name}={value!r} must be a number")
        if unit_interval and not 0.0 <= value <= 1.0:
            raise ConfigError(f"{key}.{name}={value!r} is outside [0, 1]: a mixing ratio is the fraction of each "
                              f"batch that is classification rows")
        if not unit_interval and value < 0:
            raise ConfigError(f"{key}.{name}={value!r} must be >= 0")
        return float(value)

    for name in ("value", "start", "end"):
        if name in spec and name in allowed:
            number(name, spec[name])
    for name in ("steps", "switch_step"):
        if name in spec and (isinstance(spec[name], bool) or not isinstance(spec[name], int)
                             or spec[name] < (1 if name == "steps" else 0)):
            raise ConfigError(f"{key}.{name}={spec[name]!r} must be an integer >= {1 if name == 'steps' else 0}")
    if kind == "staged":
        values, boundaries = list(spec.get("values", ())), list(spec.get("boundaries", ()))
        for i, v in enumerate(values):
            number(f"values[{i}]", v)
        if len(values) != len(boundaries) + 1:
            raise ConfigError(f"{key}: a staged schedule has one more value than boundaries; got {len(values)} "
                              f"values and {len(boundaries)} boundaries")
        if any(isinstance(b, bool) or not isinstance(b, int) or b <= 0 for b in boundaries) or \
                boundaries != sorted(set(boundaries)):
            raise ConfigError(f"{key}.boundaries={boundaries} must be increasing positive step numbers")


def optax_schedule(kind: str, *, value: float = 0.5, start: float = 1.0, end: float = 0.0, steps: int = 1,
                   boundaries: Sequence[int] = (), values: Sequence[float] = (), switch_step: int = 0):
    """A jit-friendly schedule step -> value (optax).

    constant(value); linear(start -> end over steps); cosine(start -> end over
    steps); staged(values[i] from boundaries[i-1], piecewise constant);
    sequential(1 until switch_step, then 0: instruction-following after
    classification).
    """
    if kind == "constant":
        return optax.constant_schedule(value)
    if kind == "linear":
        return optax.linear_schedule(start, end, steps)
    if kind == "cosine":
        decay = optax.cosine_decay_schedule(1.0, steps)   # 1 -> 0
        return lambda s: end + (start - end) * decay(s)
    if kind == "staged":
        if len(values) != len(boundaries) + 1:
            raise ValueError(f"staged schedule: {len(values)} values need {len(values) - 1} boundaries, "
                             f"got {len(boundaries)}")
        return optax.join_schedules([optax.constant_schedule(v) for v in values], list(boundaries))
    if kind == "sequential":
        return optax.join_schedules([optax.constant_schedule(1.0), optax.constant_schedule(0.0)], [switch_step])
    raise ValueError(f"schedule kind {kind!r} is unknown; choose one of {SCHEDULES}")


def make_schedule(kind: str, **kw) -> Schedule:
    """r(step) in [0, 1]: the fraction of each batch that is classification rows (host side, numpy).

    Values outside [0, 1] are an error, never clamped (configs are checked by `check_schedule` first); only
    float rounding of the cosine's ends (1e-9) is absorbed.
    """
    sched = optax_schedule(kind, **kw)

    def ratio(step):
        r = np.broadcast_to(np.asarray(sched(step), np.float64), np.shape(step))
        if not np.all((r >= -1e-9) & (r <= 1 + 1e-9)):
            raise ValueError(f"mixing schedule {kind} {kw} gives ratios outside [0, 1]: {np.unique(r[(r < 0) | (r > 1)])}")
        return np.clip(r, 0.0, 1.0)
    return ratio


def classification_rows(schedule: Schedule, steps: np.ndarray, batch_size: int) -> np.ndarray:
    """round(r(s)·B) per step, half away from zero (Python's round is banker's)."""
    return np.floor(schedule(steps) * batch_size + 0.5).astype(np.int64)


def classification_slots(n_cls: int, batch_size: int) -> np.ndarray:
    """Which of the B slots hold classification rows: spread evenly over the batch."""
    k = np.arange(batch_size)
    return (np.floor((k + 1) * n_cls / batch_size) > np.floor(k * n_cls / batch_size))


def exact_counts(weights: Sequence[float], total: int) -> np.ndarray:
    """Largest-remainder apportionment of `total` by `weights` (ties: lower index first)."""
    w = np.asarray(weights, np.float64) / np.sum(weights)
    quota = w * total
    counts = np.floor(quota).astype(np.int64)
    order = sorted(range(len(w)), key=lambda i: (-(quota[i] - counts[i]), i))
    counts[order[:total - counts.sum()]] += 1
    return counts


class ScheduledMixture(grain.MapDataset):
    """Element i = (step, local slot) of this process's slice of the global batch.

    `classification`: one infinite MapDataset per classification task, shared by
    `weights`; `instruction`: one infinite MapDataset (rows or packed rows).
    Process p of P reads slots [p·B/P, (p+1)·B/P) of every global batch.
    """

    def __init__(self, classification: Sequence[grain.MapDataset], weights: Sequence[float],
                 instruction: grain.MapDataset | None, schedule: Schedule, batch_size: int, num_steps: int,
                 seed: int = 0, block_size: int = 1024, process_index: int = 0, process_count: int = 1):
        super().__init__(list(classification) + ([instruction] if instruction is not None else []))
        if batch_size % process_count:
            raise ValueError(f"global batch {batch_size} is not divisible by {process_count} processes")
        if classification and len(weights) != len(classification):
            raise ValueError(f"{len(classification)} classification sources but {len(weights)} weights")
        self.cls, self.instr = list(classification), instruction
        self.weights, self.schedule, self.seed, self.block_size = list(weights), schedule, seed, block_size
        self.batch_size, self.num_steps = batch_size, num_steps
        self.local_batch = batch_size // process_count
        self.slot_offset = process_index * self.local_batch
        n_cls = classification_rows(schedule, np.arange(num_steps), batch_size)
        if n_cls.any() and not self.cls:
            raise ValueError("the mixing schedule asks for classification rows but no classification task is set")
        if (n_cls < batch_size).any() and instruction is None:
            first = int(np.argmax(n_cls < batch_size))
            raise ValueError(f"the mixing schedule asks for instruction rows (step {first}: {batch_size - n_cls[first]}"
                             f" of {batch_size}) but no instruction data is set")
        self.n_cls = n_cls
        self.cls_before = np.concatenate([[0], np.cumsum(n_cls)])   # classification rows before step s

    def __len__(self) -> int:
        return self.num_steps * self.local_batch

    def __str__(self) -> str:
        return f"ScheduledMixture(batch={self.batch_size}, steps={self.num_steps}, tasks={len(self.cls)})"

    def composition(self, step: int) -> tuple[int, int]:
        """(classification rows, instruction rows) of global step `step`."""
        return int(self.n_cls[step]), self.batch_size - int(self.n_cls[step])

    @functools.lru_cache(maxsize=8)
    def _block(self, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Task of each classification row in a block, its rank among the task's rows there, and counts."""
        counts = exact_counts(self.weights, self.block_size)
        tasks = np.repeat(np.arange(len(counts)), counts)
        tasks = np.random.default_rng([self.seed, block]).permutation(tasks)
        rank = np.zeros_like(tasks)
        for t in range(len(counts)):
            rank[tasks == t] = np.arange(counts[t])
        return tasks, rank, counts

    def locate(self, step: int, slot: int) -> tuple[int, int]:
        """(source, index into that source) of global (step, slot); source len(cls) is instruction."""
        n_cls = int(self.n_cls[step])
        is_cls = classification_slots(n_cls, self.batch_size)
        before_in_step = int(is_cls[:slot].sum())
        if is_cls[slot]:
            g = int(self.cls_before[step]) + before_in_step           # global classification row
            tasks, rank, counts = self._block(g // self.block_size)
            t = int(tasks[g % self.block_size])
            return t, (g // self.block_size) * int(counts[t]) + int(rank[g % self.block_size])
        h = step * self.batch_size - int(self.cls_before[step]) + (slot - before_in_step)
        return len(self.cls), h

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        step, local_slot = divmod(index, self.local_batch)
        source, i = self.locate(step, self.slot_offset + local_slot)
        return self.cls[source][i] if source < len(self.cls) else self.instr[i]
