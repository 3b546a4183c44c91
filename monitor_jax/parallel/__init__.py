"""Device meshes and logical-axis sharding rules."""
from monitor_jax.parallel.mesh import make_mesh
from monitor_jax.parallel.sharding import (
    DEFAULT_RULES,
    constrain,
    logical_to_spec,
    named_sharding,
)

__all__ = ["make_mesh", "DEFAULT_RULES", "constrain", "logical_to_spec", "named_sharding"]
