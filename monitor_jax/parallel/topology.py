"""Hardware a plan targets: a TPU slice by name (abstract devices from libtpu's topology, no TPU needed), or N
accelerators of a given memory and peak (simulated CPU devices standing in for them).

    tpu_target("v5e-64")      -> 64 abstract v5e chips (16 GiB, 197 TFLOP/s bf16 each), the TPU compiler
    device_target(8, 80, 989) -> 8 GPUs on simulated CPU devices; the CPU compiler stands in for the GPU's
    device_target(8, 16, 197, platform="cpu") -> 8 CPU devices, compiled by their own compiler

TPU slice names count chips for v5e/v6e (one TensorCore a chip) and TensorCores for v4/v5p (two a chip, one
"megacore" device), as Cloud TPU names them. The topology shapes and wrap-arounds are the ones Cloud TPU slices
have (MaxText's accelerator_to_spec_map lists the same).
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

import jax

from monitor_jax.errors import ConfigError

GIB = 1 << 30


@dataclasses.dataclass(frozen=True)
class Chip:
    """One TPU generation: per chip (= per JAX device), HBM bytes and dense bf16 peak FLOP/s."""
    topology_prefix: str        # libtpu's topology name prefix
    hbm_bytes: int
    peak_flops: float
    cores_per_chip: int         # how the slice name counts: chips (1) or TensorCores (2)
    chip_config: str            # "default" or "megacore"
    dims: int                   # 2D (v5e, v6e) or 3D (v4, v5p) torus


# Public Cloud TPU figures (cloud.google.com/tpu/docs/system-architecture-tpu-vm, per chip).
CHIPS = {
    "v4": Chip("v4", 32 * GIB, 275e12, 2, "megacore", 3),
    "v5e": Chip("v5e", 16 * GIB, 197e12, 1, "default", 2),
    "v5p": Chip("v5", 95 * GIB, 459e12, 2, "megacore", 3),
    "v6e": Chip("v6e", 32 * GIB, 918e12, 1, "default", 2),
}
# chips -> topology (Cloud TPU's slice shapes).
SHAPES_2D = {1: (1, 1), 4: (2, 2), 8: (2, 4), 16: (4, 4), 32: (4, 8), 64: (8, 8), 128: (8, 16), 256: (16, 16)}
SHAPES_3D = {4: (2, 2, 1), 8: (2, 2, 2), 16: (2, 2, 4), 32: (2, 4, 4), 64: (4, 4, 4), 128: (4, 4, 8),
             256: (4, 8, 8), 512: (8, 8, 8), 1024: (8, 8, 16), 2048: (8, 16, 16), 4096: (16, 16, 16)}


@dataclasses.dataclass(frozen=True)
class Target:
    """Where a plan compiles: the devices, and what each has."""
    name: str
    devices: tuple[Any, ...]
    hbm_bytes: int               # per device
    peak_flops: float            # per device, dense bf16
    hosts: int
    platform: str                # tpu | gpu | cpu: what the devices are (a GPU is compiled for on CPU devices)

    @property
    def num_devices(self) -> int:
        return len(self.devices)

    @property
    def target_compiler(self) -> bool:
        """Whether the programs are compiled by the target's own compiler (TPU, CPU) or by XLA CPU standing in
        for it (a GPU: jax has no abstract GPU backend)."""
        return self.platform != "gpu"


def slice_shape(name: str) -> tuple[str, Chip, tuple[int, ...]]:
    """("v5e", chip, (8, 8)) for "v5e-64"; a ConfigError lists the known generations and sizes."""
    m = re.fullmatch(r"(v4|v5e|v5p|v6e)-(\d+)", name)
    if not m:
        raise ConfigError(f"--topology={name!r}: expected a Cloud TPU slice name such as v5e-64, v5p-128, v4-32 or "
                          f"v6e-8 (generations: {', '.join(CHIPS)})")
    gen, count = m.group(1), int(m.group(2))
    chip = CHIPS[gen]
    shapes = SHAPES_2D if chip.dims == 2 else SHAPES_3D
    if count % chip.cores_per_chip or count // chip.cores_per_chip not in shapes:
        sizes = ", ".join(f"{gen}-{n * chip.cores_per_chip}" for n in shapes)
        raise ConfigError(f"--topology={name!r}: not a {gen} slice size; known: {sizes}")
    return gen, chip, shapes[count // chip.cores_per_chip]


def tpu_target(name: str) -> Target:
    """The slice's devices as libtpu describes them, without a TPU (needs `pip install -e '.[tpu]'`)."""
    gen, chip, shape = slice_shape(name)
    # An abstract topology opens no TPU, so libtpu's one-process lock (/tmp/libtpu_lockfile, which guards real
    # chips) must not stop a second plan, or a plan beside a test, from describing one.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    try:
        from jax.experimental import topologies

        # 4 chips (2x2) per host, as on multi-host slices; a 1-chip slice is one host of one chip.
        per_host = (1, 1, 1) if shape == (1, 1) else (2, 2, 1)
        # Full rings wrap: 16 chips along a 2D axis, and every axis of 3D slices of 64 chips or more.
        wrap = tuple(d == 16 for d in shape) + (False,) if chip.dims == 2 else (min(shape) >= 4,) * 3
        topo = topologies.get_topology_desc(platform="tpu", topology_name=f"{chip.topology_prefix}:"
                                            + "x".join(map(str, shape)), chip_config_name=chip.chip_config,
                                            chips_per_host_bounds=per_host, num_slices=1, wrap=wrap)
    except (ImportError, RuntimeError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"--topology={name}: libtpu could not describe the slice ({first}); planning for a TPU "
                          f"without one needs libtpu: pip install -e '.[tpu]'") from None
    devices = tuple(topo.devices)
    hosts = len({d.process_index for d in devices})
    return Target(name, devices, chip.hbm_bytes, chip.peak_flops, hosts, platform="tpu")


def device_target(num_devices: int, hbm_gib: float, peak_tflops: float, platform: str = "gpu") -> Target:
    """`num_devices` GPUs (or CPU devices: `platform="cpu"`) of `hbm_gib` and `peak_tflops` each, compiled on this
    process's CPU devices (the process must have been started with that many:
    XLA_FLAGS=--xla_force_host_platform_device_count)."""
    if platform not in ("gpu", "cpu"):
        raise ConfigError(f"--platform={platform!r}: --devices plans for gpu or cpu devices")
    cpus = jax.devices("cpu")
    if len(cpus) < num_devices:
        raise ConfigError(f"--devices={num_devices}: this process has {len(cpus)} CPU devices; start it with "
                          f"XLA_FLAGS=--xla_force_host_platform_device_count={num_devices} (the plan command does)")
    name = f"{num_devices} x {hbm_gib:g} GiB, {peak_tflops:g} TFLOP/s"
    return Target(name, tuple(cpus[:num_devices]), int(hbm_gib * GIB), peak_tflops * 1e12, 1, platform=platform)
