"""Logical axis names -> mesh axes: the one table that decides the parallel layout.

Every parameter declares logical axes next to its definition (see
`model/transformer.py`); activations are constrained with the same names. A
layout change (pure data parallel, FSDP, tensor parallel) is an edit of the
rules in the config, never of the model code.
"""
from __future__ import annotations

from typing import Sequence

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MeshAxes = str | tuple[str, ...] | None
Rules = tuple[tuple[str, MeshAxes], ...]

# Megatron-style tensor parallelism over 'tensor' (heads, MLP hidden, vocab),
# parameters additionally sharded over 'fsdp' along the model dimension, and the
# batch split over both 'data' and 'fsdp' (FSDP is data parallel with sharded
# weights).
DEFAULT_RULES: Rules = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("cache_length", None),
    ("embed", "fsdp"),      # model dimension of weights
    ("act_embed", None),    # model dimension of activations
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("norm", None),
)


def _lookup(name: str | None, rules: Rules) -> MeshAxes:
    if name is None:
        return None
    for logical, mesh_axes in rules:
        if logical == name:
            return mesh_axes
    raise KeyError(f"logical axis {name!r} has no rule; known: {[r[0] for r in rules]}")


def logical_to_spec(axes: Sequence[str | None], rules: Rules = DEFAULT_RULES,
                    shape: Sequence[int] | None = None, mesh: Mesh | None = None) -> PartitionSpec:
    """PartitionSpec for logical `axes`.

    With `shape` and `mesh`, a dimension that the mapped mesh axes do not divide
    is replicated instead (e.g. 2 KV heads on tensor=4): arrays placed with
    `device_put` must divide evenly, and replicating a small dimension is the
    standard fallback.
    """
    spec, used = [], set()
    for i, name in enumerate(axes):
        mesh_axes = _lookup(name, rules)
        names = (mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes or ())
        # A mesh axis may appear once per spec; later uses are dropped.
        names = tuple(n for n in names if n not in used)
        if mesh is not None:
            names = tuple(n for n in names if mesh.shape[n] > 1)
            if shape is not None:
                size = 1
                for n in names:
                    size *= mesh.shape[n]
                if shape[i] % size:
                    names = ()
        used.update(names)
        spec.append(None if not names else names[0] if len(names) == 1 else names)
    return PartitionSpec(*spec)


def named_sharding(mesh: Mesh, axes: Sequence[str | None], shape: Sequence[int],
                   rules: Rules = DEFAULT_RULES) -> NamedSharding:
    return NamedSharding(mesh, logical_to_spec(axes, rules, shape, mesh))


def constrain(x: jax.Array, axes: Sequence[str | None], rules: Rules = DEFAULT_RULES) -> jax.Array:
    """`with_sharding_constraint` by logical names, a no-op outside `jax.set_mesh`."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    return jax.lax.with_sharding_constraint(x, logical_to_spec(axes, rules, x.shape, mesh))
