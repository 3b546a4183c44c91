"""Build a model directly on its target shardings (random init or abstract)."""
from __future__ import annotations

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec, SingleDeviceSharding

from monitor_jax.model.config import ModelConfig
from monitor_jax.model.transformer import Transformer
from monitor_jax.parallel.sharding import Rules, named_sharding


def abstract_model(cfg: ModelConfig) -> Transformer:
    """The model with ShapeDtypeStruct leaves: shapes, dtypes and logical axes, no memory."""
    return nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))


def variable_sharding(var: nnx.Variable, mesh: Mesh | None, rules: Rules):
    if mesh is None:
        return SingleDeviceSharding(jax.devices()[0])
    axes = var.get_metadata().get("logical_axes")
    if axes is None:
        return NamedSharding(mesh, PartitionSpec())
    return named_sharding(mesh, axes, var.shape, rules)


def state_shardings(state: nnx.State, mesh: Mesh | None, rules: Rules) -> nnx.State:
    """A sharding per variable, from the logical axes declared on it."""
    return jax.tree.map(lambda v: variable_sharding(v, mesh, rules), state,
                        is_leaf=lambda x: isinstance(x, nnx.Variable))


def create_model(cfg: ModelConfig, *, mesh: Mesh | None = None, seed: int = 0) -> Transformer:
    """Random-init model, each parameter created on its own sharding (no host copy)."""
    graphdef, abs_state = nnx.split(abstract_model(cfg))
    shardings = state_shardings(abs_state, mesh, cfg.sharding_rules)

    @jax.jit
    def init():
        return nnx.split(Transformer(cfg, rngs=nnx.Rngs(seed)))[1]

    state = jax.jit(init, out_shardings=shardings)()
    return nnx.merge(graphdef, state)
