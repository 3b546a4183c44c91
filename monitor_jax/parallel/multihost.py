"""Multi-host input (each process holds its slice of the global batch; jax assembles it), barriers, and
sharing process 0's word with the others."""
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


def share_text(text: str) -> str:
    """Process 0's `text` on every process (on one process, `text`): e.g. why process 0 refused to start."""
    if jax.process_count() == 1:
        return text
    from jax.experimental import multihost_utils

    mine = np.frombuffer(text.encode(), np.uint8).astype(np.int32) if jax.process_index() == 0 else \
        np.zeros(0, np.int32)
    n = int(multihost_utils.broadcast_one_to_all(np.int32(mine.size)))
    if n == 0:
        return ""
    data = mine if mine.size == n else np.zeros(n, np.int32)
    return bytes(np.asarray(multihost_utils.broadcast_one_to_all(data)).astype(np.uint8)).decode()
