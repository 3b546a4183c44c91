"""Build the ('data', 'fsdp', 'tensor') device mesh from a config."""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax
from jax.sharding import AxisType, Mesh

from monitor_jax.errors import ConfigError
from monitor_jax.settings import setting

MESH_AXES = ("data", "fsdp", "tensor")


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """The `mesh` config section: the device mesh's axis sizes (checked by `mesh_shape`)."""
    data: int = setting(-1, "data-parallel size (-1 = the devices the other axes leave)", check=False)
    fsdp: int = setting(1, "fully sharded data-parallel size: parameters and optimizer state sharded", check=False)
    tensor: int = setting(1, "tensor-parallel size: heads and MLP columns split", check=False)


def mesh_shape(data: int, fsdp: int, tensor: int, num_devices: int) -> tuple[int, int, int]:
    """(data, fsdp, tensor) sizes over `num_devices`; one may be -1 (= the rest). A ConfigError names the axes."""
    sizes = [data, fsdp, tensor]
    if any(isinstance(v, bool) or not isinstance(v, int) or v == 0 or v < -1 for v in sizes):
        raise ConfigError(f"mesh: data={data}, fsdp={fsdp}, tensor={tensor}; each axis is a positive size or -1 "
                          f"(the rest of the devices)")
    if sizes.count(-1) > 1:
        raise ConfigError(f"mesh: at most one axis may be -1, got data={data}, fsdp={fsdp}, tensor={tensor}")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if num_devices % known:
            raise ConfigError(f"mesh: {num_devices} devices are not divisible by the fixed axes "
                              f"(data={data}, fsdp={fsdp}, tensor={tensor})")
        sizes[sizes.index(-1)] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise ConfigError(f"mesh: data*fsdp*tensor = {math.prod(sizes)} but there are {num_devices} devices "
                          f"(data={sizes[0]}, fsdp={sizes[1]}, tensor={sizes[2]}); set one axis to -1 to fill")
    return sizes[0], sizes[1], sizes[2]


def batch_split(mesh) -> int:
    """How many ways a batch is split on `mesh` (data x fsdp; 1 without a mesh)."""
    return 1 if mesh is None else mesh.shape.get("data", 1) * mesh.shape.get("fsdp", 1)


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh over `devices` (default: all); one axis size may be -1 (= the rest).

    Axis types are Auto: shardings propagate through `jax.jit` from the declared
    in/out shardings and the model's `with_sharding_constraint`s (pjit style),
    rather than being carried in every array's type (Explicit, jax's default).
    """
    devices = list(jax.devices() if devices is None else devices)
    sizes = mesh_shape(data, fsdp, tensor, len(devices))
    return jax.make_mesh(sizes, MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)
