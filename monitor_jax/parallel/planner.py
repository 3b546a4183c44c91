"""What a compiled program needs per device, read from XLA without running it: the planner's measurements.

    abstract(tree, shardings)     ShapeDtypeStructs that carry their shardings (nothing allocated)
    bytes_per_device(tree)        the bytes one device holds of a tree of sharded arrays or abstract values
    compiled_stats(compiled)      arguments, outputs, temporaries, aliases, peak, FLOPs, bytes accessed
    by_layers(a, b, la, lb, n)    a figure measured at la and lb layers, extrapolated to n (linear in layers)
    largest_batch(...)            the largest batch under a memory limit, from two measured batch sizes

On TPU the compiled memory's `temp_size_in_bytes` can read 0 while `peak_memory_in_bytes` does not, so the total
is max(peak, arguments + outputs + temporaries - aliases), as MaxText's train_compile reports it. Compiled on
simulated CPU devices the analyses are per device as well, but from the CPU compiler: its fusion and its
handling of bfloat16 differ from a GPU's, so the figures approximate the target's.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

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


def by_layers(a: Stats, b: Stats, layers_a: int, layers_b: int, layers: int) -> Stats:
    """Figures measured with `layers_a` < `layers_b` layers, extrapolated linearly to `layers`: every layer adds
    its parameters, their optimizer state and gradients, its saved activations and its FLOPs.

    The total grows by the per-layer growth of XLA's peak where the backend reports one: the TPU compiler's
    temporaries are not linear in depth (near the memory limit it rematerialises more, and 4 layers measured
    fewer temporaries than 2 for Qwen3-8B on v5e-8), while its peak is (9.43, 11.65, 13.87 GiB at 2, 4, 6
    layers). The temporaries shown are then what the extrapolated total leaves for them."""
    fields = [f.name for f in dataclasses.fields(Stats)]
    per_layer = {k: (getattr(b, k) - getattr(a, k)) / (layers_b - layers_a) for k in fields}
    out = {k: getattr(a, k) + per_layer[k] * (layers - layers_a) for k in fields}
    growth = per_layer["peak"] if a.peak > 0 and b.peak > 0 else (b.total - a.total) / (layers_b - layers_a)
    total = a.total + growth * (layers - layers_a)
    out["temporaries"] = total - out["arguments"] - out["outputs"] + out["aliased"]
    return Stats(**out)


def largest_batch(total_small: float, total_large: float, batch_small: int, batch_large: int, limit: float,
                  multiple: int) -> int:
    """The largest batch (a multiple of `multiple`) whose memory, linear in the batch through the two measured
    points, stays under `limit`; 0 when not even `multiple` rows fit."""
    per_row = (total_large - total_small) / (batch_large - batch_small)
    fixed = total_small - per_row * batch_small
    if per_row <= 0:
        return batch_large if total_large <= limit else 0
    rows = int((limit - fixed) // per_row)
    return max(rows // multiple * multiple, 0)
