"""What a compiled program needs per device, read from XLA without running it: the planner's measurements.

    abstract(tree, shardings)     ShapeDtypeStructs that carry their shardings (nothing allocated)
    bytes_per_device(tree)        the bytes one device holds of a tree of sharded arrays or abstract values
    compiled_stats(compiled)      arguments, outputs, temporaries, aliases, peak, FLOPs, bytes accessed
    by_layers(a, b, la, lb, n)    a figure measured at la and lb layers, extrapolated to n (linear in layers,
                                  growing at least by what a layer must hold)
    held_by_layers(a, b, ...)     the same, growing by exactly what a layer holds (a compiler that reuses the
                                  layers' transients: a GPU's, planned on CPU)
    largest_batch(...)            the largest batch under a memory limit, from two measured batch sizes
    search_largest_batch(...)     that estimate compiled, and corrected by secant until a compiled batch fits

On TPU the compiled memory's `temp_size_in_bytes` can read 0 while `peak_memory_in_bytes` does not, so the total
is max(peak, arguments + outputs + temporaries - aliases), as MaxText's train_compile reports it. Compiled on
simulated CPU devices the analyses are per device as well, but from the CPU compiler: its fusion and its
handling of bfloat16 differ from a GPU's, so the figures approximate the target's.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
from flax import nnx


def abstract(tree: Any, shardings: Any) -> Any:
    """`tree`'s leaves (arrays, ShapeDtypeStructs, or nnx Variables holding them) as ShapeDtypeStructs with the
    matching sharding (`shardings`: one per leaf, or per Variable)."""
    def one(s, x):
        s = s.get_value() if isinstance(s, nnx.Variable) else s
        sds = jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s)
        return x.replace(sds) if isinstance(x, nnx.Variable) else sds

    return jax.tree.map(one, shardings, tree, is_leaf=lambda x: isinstance(x, nnx.Variable))


def _device_bytes(x) -> int:
    shape = x.sharding.shard_shape(x.shape) if getattr(x, "sharding", None) is not None else x.shape
    return math.prod(shape) * jax.numpy.dtype(x.dtype).itemsize


def bytes_per_device(tree: Any) -> int:
    """Bytes the most loaded device holds of `tree` (every shard of an evenly sharded leaf is the same size)."""
    return sum(_device_bytes(x) for x in jax.tree.leaves(tree))


@dataclasses.dataclass(frozen=True)
class Stats:
    """One compiled program, per device."""
    arguments: float
    outputs: float
    temporaries: float
    aliased: float              # outputs written into donated arguments
    peak: float                 # XLA's own peak estimate (0 where the backend reports none)
    flops: float
    bytes_accessed: float

    @property
    def total(self) -> float:
        """What the device must hold at once."""
        return max(self.peak, self.arguments + self.outputs + self.temporaries - self.aliased)

    def scaled(self, f) -> "Stats":
        return Stats(*(f(getattr(self, k.name)) for k in dataclasses.fields(self)))


class DoesNotFit(Exception):
    """The target's compiler refused the program for lack of memory (the TPU compiler does, at compile time)."""


def compile_or_report(lowered):
    """`lowered.compile()`; a TPU compiler's out-of-memory refusal becomes DoesNotFit with its first line."""
    try:
        return lowered.compile()
    except Exception as e:     # jax raises XlaRuntimeError / JaxRuntimeError, by version
        text = str(e)
        if "RESOURCE_EXHAUSTED" not in text and "Ran out of memory" not in text:
            raise
        raise DoesNotFit(next((line.strip() for line in text.splitlines() if line.strip()), text)) from None


def compiled_stats(compiled) -> Stats:
    """Per-device memory and cost of a compiled jax program (`jax.jit(f).lower(...).compile()`)."""
    m = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else (cost or {})
    return Stats(float(m.argument_size_in_bytes), float(m.output_size_in_bytes), float(m.temp_size_in_bytes),
                 float(m.alias_size_in_bytes), float(getattr(m, "peak_memory_in_bytes", 0) or 0),
                 float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0)))


def by_layers(a: Stats, b: Stats, layers_a: int, layers_b: int, layers: int,
              saved_per_layer: float = 0.0) -> tuple[Stats, bool]:
    """Figures measured with `layers_a` < `layers_b` layers, extrapolated linearly to `layers`: every layer adds
    its parameters, their optimizer state and gradients, its saved activations and its FLOPs. Also returns
    whether the total's growth was raised to its floor (below).

    The total grows by the larger of the per-layer growths of the total and of XLA's peak, and at least by what
    a layer must hold (below). The TPU compiler's temporaries are not linear in depth (near the memory limit it
    rematerialises more, and 4 layers measured fewer temporaries than 2 for Qwen3-8B on v5e-8) while its peak
    is (9.43, 11.65, 13.87 GiB at 2, 4, 6 layers); the CPU compiler's "peak" is its arguments alone, and its
    temporaries are linear (the demo at 12 layers: 19.7, 31.9, 44.1, 56.3 MiB at 2, 4, 6, 8 layers, 80.7 at
    12). The temporaries shown are what the extrapolated total leaves for them.

    A peak is a maximum over the program, not a sum: at a small depth it can sit where a buffer the depth does
    not change is live (Qwen3-8B LoRA on v5e-64: the gathered vocabulary tables), and then grows less a layer
    than a layer adds at the deepest point of the backward pass, where every layer's arguments and
    `saved_per_layer` (its input kept for the backward pass, in bytes a device) are live at once. The growth is
    at least that, so the extrapolation never falls below it."""
    fields = [f.name for f in dataclasses.fields(Stats)]
    per_layer = {k: (getattr(b, k) - getattr(a, k)) / (layers_b - layers_a) for k in fields}
    out = {k: getattr(a, k) + per_layer[k] * (layers - layers_a) for k in fields}
    growth = max(per_layer["peak"], (b.total - a.total) / (layers_b - layers_a))
    floor = per_layer["arguments"] + saved_per_layer
    floored = growth < floor
    total = a.total + max(growth, floor) * (layers - layers_a)
    out["temporaries"] = total - out["arguments"] - out["outputs"] + out["aliased"]
    return Stats(**out), floored


def held_by_layers(a: Stats, b: Stats, layers_a: int, layers_b: int, layers: int, held_per_layer: float) -> Stats:
    """Figures measured with `layers_a` < `layers_b` layers, extrapolated to `layers` for a compiler that reuses
    one layer's transient buffers for the next: every further layer adds its arguments (parameters, optimizer
    state), outputs not written into donated arguments, and `held_per_layer` (what the program keeps of it
    besides its arguments: its gradients and its saved input in a train step, nothing in a forward pass); the
    transients of the layer being computed are those of the `layers_a`-layer program, which holds them once.

    This is how a GPU is planned on simulated CPU devices: the CPU compiler's temporaries grow far more a layer
    than a layer keeps (Qwen3-8B at 8 rows of 2048 tokens a device: about 6 GiB a layer in the train step, where
    a rematerialised layer keeps 0.125 GiB of input), so its own growth would say a GPU node cannot hold what
    it can (docs/scaling.md). The arguments, outputs, aliases and FLOPs are extrapolated linearly (exact);
    XLA CPU's "peak" (its arguments) is not carried over."""
    fields = [f.name for f in dataclasses.fields(Stats)]
    per_layer = {k: (getattr(b, k) - getattr(a, k)) / (layers_b - layers_a) for k in fields}
    out = {k: getattr(a, k) + per_layer[k] * (layers - layers_a) for k in fields}
    kept = per_layer["arguments"] + per_layer["outputs"] - per_layer["aliased"] + held_per_layer
    total = a.arguments + a.outputs + a.temporaries - a.aliased + kept * (layers - layers_a)
    out["temporaries"] = total - out["arguments"] - out["outputs"] + out["aliased"]
    out["peak"] = 0.0
    return Stats(**out)


def largest_batch(total_small: float, total_large: float, batch_small: int, batch_large: int, limit: float,
                  multiple: int, min_per_row: float = 0.0) -> int:
    """The largest batch (a multiple of `multiple`) whose memory, linear in the batch through the two measured
    points and growing at least `min_per_row` a row from the smaller one, stays under `limit`; 0 when not even
    `multiple` rows fit."""
    per_row = max((total_large - total_small) / (batch_large - batch_small), min_per_row)
    fixed = total_small - per_row * batch_small
    if per_row <= 0:
        return batch_large if total_large <= limit else 0
    rows = int((limit - fixed) // per_row)
    return max(rows // multiple * multiple, 0)


def search_largest_batch(total_at: Callable[[int], float | None], measured: dict[int, float | None],
                         candidate: int, limit: float, multiple: int, min_per_row: float = 0.0,
                         rounds: int = 4) -> tuple[int, dict[int, float | None]]:
    """The largest batch whose compiled total (`total_at(batch)`: bytes, or None where the compiler refused
    it) stays under `limit`, starting from `candidate` (largest_batch's line) and the totals already
    `measured`; returns it and every total measured (the batches around the answer show how sure it is).

    A line through two small batches can promise rows that do not fit: where the peak at those batches is set
    by a buffer the batch does not change (docs/scaling.md), the memory grows less a row there than it does
    once the activations dominate. So the estimate is compiled; if it does not fit, the next candidate comes
    from the secant through the two largest batches measured (growing at least `min_per_row` a row), within
    the largest batch known to fit and the smallest known not to, at most `rounds` compiles."""
    totals = dict(measured)

    def fits(batch):
        return totals[batch] is not None and totals[batch] <= limit

    for _ in range(rounds):
        best = max((b for b in totals if fits(b)), default=0)
        failed = min((b for b in totals if not fits(b) and b > best), default=None)
        if candidate <= best or (failed is not None and candidate >= failed):
            candidate = (best + failed) // 2 // multiple * multiple if failed is not None else best
        if candidate <= best or candidate in totals:
            break
        totals[candidate] = total_at(candidate)
        if fits(candidate):
            break
        points = sorted((b, t) for b, t in totals.items() if t is not None)
        if len(points) >= 2:
            (b0, t0), (b1, t1) = points[-2:]
            per_row = max((t1 - t0) / (b1 - b0), min_per_row)
            anchor, at = max(((b, t) for b, t in points if t <= limit), default=(0, 0.0))
            candidate = int(anchor + (limit - at) // per_row) // multiple * multiple if per_row > 0 else anchor
        else:
            candidate = 0
    return max((b for b in totals if fits(b)), default=0), totals
