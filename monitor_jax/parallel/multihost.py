"""Multi-host input (each process holds its slice of the global batch; jax assembles it) and barriers."""
from __future__ import annotations

from typing import Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from monitor_jax.parallel.sharding import DEFAULT_RULES, Rules, logical_to_spec


def batch_sharding(mesh: Mesh, ndim: int, rules: Rules = DEFAULT_RULES) -> NamedSharding:
    """Leading (batch) dimension split over the batch mesh axes; the rest replicated."""
    spec = logical_to_spec(("batch",), rules)
    return NamedSharding(mesh, PartitionSpec(*spec, *([None] * (ndim - 1))))


def global_batch(local: Mapping[str, np.ndarray], mesh: Mesh, rules: Rules = DEFAULT_RULES) -> dict[str, jax.Array]:
    """This process's rows [B / processes, ...] -> global arrays [B, ...] on `mesh`."""
    return {k: jax.make_array_from_process_local_data(batch_sharding(mesh, np.ndim(v), rules), np.asarray(v))
            for k, v in local.items()}


def sync(name: str) -> None:
    """Wait until every process reaches this point (a no-op on one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
