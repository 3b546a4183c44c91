"""Sharded forward on data=2, fsdp=2, tensor=2 equals the single-device forward."""
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from monitor_jax.model import load_hf
from monitor_jax.parallel import DEFAULT_RULES, logical_to_spec, make_mesh
from tests.hf_models import padded_batch


@pytest.mark.parametrize("family,attention", [("llama", "dense"), ("gemma3", "dense"), ("gemma3", "flash")])
def test_sharded_forward_equals_single_device(hf_dir, family, attention):
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    tokens, mask = padded_batch(seed=11)
    single, _ = load_hf(hf_dir[family])
    sharded, _ = load_hf(hf_dir[family], mesh=mesh, attention=attention, attention_block=4)

    # Parameters really carry the shardings the rules give.
    q = sharded.layers[0].attn.q_proj.kernel[...]
    assert q.sharding.spec == P("fsdp", "tensor", None)
    assert len(q.addressable_shards) == 8 and q.addressable_shards[0].data.shape == (16, 2, 16 if family == "gemma3" else 8)
    assert sharded.layers[0].mlp.down_proj.kernel[...].sharding.spec == P("tensor", "fsdp")
    assert sharded.embedding[...].sharding.spec == P("tensor", "fsdp")
    assert sharded.layers[0].attn_pre_norm.scale[...].sharding.spec == P(None)

    from flax import nnx
    graphdef, state = nnx.split(sharded)
    batch_sharding = jax.NamedSharding(mesh, P(("data", "fsdp"), None))

    @jax.jit
    def forward(state, tokens, mask):
        return nnx.merge(graphdef, state)(tokens, mask)

    with jax.set_mesh(mesh):
        out = forward(state, jax.device_put(tokens, batch_sharding), jax.device_put(mask, batch_sharding))
    assert out.sharding.spec[0] == ("data", "fsdp")
    ref = np.asarray(single(tokens, mask))
    np.testing.assert_allclose(np.asarray(out), ref, atol=1e-5, rtol=1e-5)


def test_indivisible_dimension_is_replicated():
    mesh = make_mesh(data=2, fsdp=1, tensor=4)
    # 2 KV heads cannot be split 4 ways: that dimension falls back to replicated.
    assert logical_to_spec(("embed", "kv_heads", "head_dim"), DEFAULT_RULES, (32, 2, 16), mesh) == P(None, None, None)
    assert logical_to_spec(("embed", "heads", "head_dim"), DEFAULT_RULES, (32, 8, 16), mesh) == P(None, "tensor", None)


def test_layout_is_a_rules_edit(hf_dir):
    """Pure data parallel: the same code, weights replicated, by changing the rules alone."""
    rules = tuple((k, None) if k != "batch" else (k, v) for k, v in DEFAULT_RULES)
    mesh = make_mesh(data=8)
    model, cfg = load_hf(hf_dir["qwen3"], mesh=mesh, sharding_rules=rules)
    assert model.layers[0].attn.q_proj.kernel[...].sharding.spec == P(None, None, None)


def test_make_mesh_sizes_and_errors():
    assert dict(make_mesh(data=-1, fsdp=2, tensor=2).shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    assert dict(make_mesh().shape) == {"data": 8, "fsdp": 1, "tensor": 1}
    with pytest.raises(ValueError, match="at most one axis may be -1"):
        make_mesh(data=-1, fsdp=-1)
    with pytest.raises(ValueError, match="there are 8 devices"):
        make_mesh(data=3, fsdp=1, tensor=1)
    with pytest.raises(ValueError, match="not divisible"):
        make_mesh(data=-1, fsdp=3)


def test_sharded_train_forward_needs_no_full_rematerialization(capfd):
    """Every sharding transition in forward and backward is efficient: XLA never falls back to replicating a
    tensor (it says so on stderr), e.g. for the embedding lookup under FSDP."""
    from flax import nnx

    from monitor_jax.model import ModelConfig, create_model

    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    cfg = ModelConfig(family="qwen3", vocab_size=512, embed_dim=32, num_layers=1, num_heads=4, num_kv_heads=2,
                      head_dim=8, mlp_dim=64, qk_norm=True)
    graphdef, state = nnx.split(create_model(cfg, mesh=mesh))
    tokens = jax.device_put(np.zeros((8, 64), np.int32), jax.NamedSharding(mesh, P(("data", "fsdp"), None)))

    @jax.jit
    def grads(state, tokens):
        return jax.grad(lambda s: nnx.merge(graphdef, s).hidden_states(tokens).sum())(state)

    capfd.readouterr()
    with jax.set_mesh(mesh):
        jax.block_until_ready(grads(state, tokens))
    assert "Involuntary full rematerialization" not in capfd.readouterr().err
