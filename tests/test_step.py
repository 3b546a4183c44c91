"""The jitted train step: accumulation = large batch, sharded = single device, one compilation."""
import jax
import numpy as np
import optax
import pytest
from flax import nnx

from monitor_jax.model import create_model
from monitor_jax.parallel import make_mesh
from monitor_jax.train.optimizer import OptimConfig, adamw
from monitor_jax.train.step import LossConfig, init_state, jit_train_step, make_train_step
from tests.train_helpers import batches, tiny_config

OPTIM = OptimConfig(lr=1e-2, warmup_steps=2, decay="cosine", end_factor=0.1, b1=0.9, b2=0.95, eps=1e-8,
                    weight_decay=0.1, clip_norm=1.0)


def run(tok, mesh, loss_cfg=LossConfig(chunk_size=16), steps=3, same_batch=False, **model_kw):
    cfg = tiny_config(tok.vocab_size, **model_kw)
    model = create_model(cfg, mesh=mesh, seed=2)
    optimizer = adamw(OPTIM, 10)
    state = init_state(model, optimizer, mesh)
    graphdef = nnx.graphdef(model)
    step_fn = make_train_step(graphdef, optimizer, loss_cfg, optax.constant_schedule(1.0),
                              optax.constant_schedule(0.5))
    data = batches(tok, steps=steps)
    jitted = jit_train_step(step_fn, state, mesh, data[0], cfg.sharding_rules)
    metrics = []
    with jax.set_mesh(mesh):
        for s in range(steps):
            state, m = jitted(state, dict(data[0 if same_batch else s]))
            metrics.append(jax.device_get(m))
    return state, metrics, jitted


def _params(state):
    return jax.tree.map(np.asarray, jax.device_get(state.params))


def test_gradient_accumulation_equals_the_large_batch(small_tokenizer):
    mesh = make_mesh(data=1, devices=jax.devices()[:1])
    big, m_big, _ = run(small_tokenizer, mesh)
    acc, m_acc, _ = run(small_tokenizer, mesh, LossConfig(chunk_size=16, grad_accum=4))
    for a, b in zip(m_big, m_acc):
        np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5)
        np.testing.assert_allclose(a["grad_norm"], b["grad_norm"], rtol=1e-4)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=1e-6, rtol=1e-4), _params(big), _params(acc))


@pytest.mark.parametrize("normalization", ["per_source", "pooled"])
def test_sharded_step_equals_single_device_and_compiles_once(small_tokenizer, normalization, capfd):
    loss_cfg = LossConfig(chunk_size=16, normalization=normalization)
    single, m_single, _ = run(small_tokenizer, make_mesh(data=1, devices=jax.devices()[:1]), loss_cfg)
    sharded, m_sharded, jitted = run(small_tokenizer, make_mesh(data=2, fsdp=2, tensor=2), loss_cfg)
    for a, b in zip(m_single, m_sharded):
        for k in a:
            np.testing.assert_allclose(a[k], b[k], rtol=2e-5, atol=1e-6, err_msg=k)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=1e-6, rtol=1e-4),
                 _params(single), _params(sharded))
    # Parameters stayed on their declared shardings through the donated updates.
    q = sharded.params["layers"][0]["attn"]["q_proj"]["kernel"][...]
    assert q.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor", None)
    # AdamW's moments are sharded exactly like their parameters (FSDP shards the optimizer state too): every
    # moment leaf carries its parameter's spec, and only the step counts are replicated.
    param_specs = [x.sharding.spec for x in jax.tree.leaves(sharded.params)]
    adam, = [s for s in jax.tree.leaves(sharded.opt_state, is_leaf=lambda s: isinstance(s, optax.ScaleByAdamState))
             if isinstance(s, optax.ScaleByAdamState)]
    for moments in (adam.mu, adam.nu):
        assert [x.sharding.spec for x in jax.tree.leaves(moments)] == param_specs
    assert adam.count.sharding.spec == jax.sharding.PartitionSpec()
    assert any(spec != jax.sharding.PartitionSpec() for spec in param_specs)
    assert jitted._cache_size() == 1
    # No sharding transition in the step made XLA fall back to replicating a tensor.
    assert "Involuntary full rematerialization" not in capfd.readouterr().err


def test_flash_attention_step_equals_dense_on_the_sharded_mesh(small_tokenizer):
    """The flash kernel's custom backward, sharded and rematerialised, gives the dense step's update."""
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    dense, m_dense, _ = run(small_tokenizer, mesh, steps=2, attention="dense")
    flash, m_flash, _ = run(small_tokenizer, mesh, steps=2, attention="flash", attention_block=16, remat="full")
    for a, b in zip(m_dense, m_flash):
        for k in ("loss", "cls_loss", "sft_loss", "grad_norm"):
            np.testing.assert_allclose(a[k], b[k], rtol=2e-5, err_msg=k)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=1e-6, rtol=1e-4), _params(dense), _params(flash))


def test_metrics_report_both_losses_counts_and_weights(small_tokenizer):
    _, metrics, _ = run(small_tokenizer, make_mesh(data=1, devices=jax.devices()[:1]), steps=2)
    m = metrics[0]
    assert m["cls_rows"] == 4 and m["sft_tokens"] > 4
    assert m["w_cls"] == 1.0 and m["w_sft"] == 0.5
    np.testing.assert_allclose(m["loss"], m["cls_loss"] + 0.5 * m["sft_loss"], rtol=1e-5)
    # It learns: a few steps (lr 1e-2 after a 2-step warmup) on one batch lower that batch's loss.
    _, again, _ = run(small_tokenizer, make_mesh(data=1, devices=jax.devices()[:1]), steps=4, same_batch=True)
    assert again[3]["loss"] < again[0]["loss"] - 0.1


def test_per_task_loss_and_accuracy_are_each_sources_own(small_tokenizer):
    """Two classification sources and instruction rows in one batch: the step's per-task sums equal the rows'
    own losses grouped by source (before the update), also with gradient accumulation; they add up to the
    batch's classification loss."""
    from monitor_jax.data.encode import ClassificationEncoder, InstructionEncoder
    from monitor_jax.data.mixing import make_schedule
    from monitor_jax.data.pipeline import train_batches
    from monitor_jax.data.sources import ListSource
    from monitor_jax.data.tasks import ClassificationTask
    from monitor_jax.train.losses import classification_terms
    from tests.train_helpers import CHAT, TASK, to_jnp

    tok, length = small_tokenizer, 64
    other = ClassificationTask(name="t_agent", domain="agent", messages=(("user", "Did the agent go rogue? {text}"),))
    rows = lambda word: ListSource([{"text": f"{word} {i}", "label": i % 2} for i in range(20)])  # noqa: E731
    chats = ListSource([{"messages": [{"role": "user", "content": f"Say {i}."},
                                      {"role": "assistant", "content": f"{i}"}]} for i in range(20)])
    data = train_batches([(rows("compound"), ClassificationEncoder(TASK, tok, length, task_id=0), 3.0),
                          (rows("deleted"), ClassificationEncoder(other, tok, length, task_id=1), 1.0)],
                         (chats, InstructionEncoder(CHAT, tok, length, task_id=2), False),
                         make_schedule("constant", value=0.75), batch_size=8, num_steps=1, length=length,
                         pad_id=tok.pad_id, seed=0)
    batch = dict(data[0])
    task_id = np.asarray(batch["task_id"])
    assert set(task_id.tolist()) == {0, 1, 2}

    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    model = create_model(tiny_config(tok.vocab_size), mesh=mesh, seed=2)
    b = to_jnp(batch)
    with jax.set_mesh(mesh):
        ce, correct, mask = jax.device_get(classification_terms(
            model.unembed, model.hidden_states(b["tokens"], segment_ids=b["segment_ids"], positions=b["positions"]),
            b))
    for grad_accum in (1, 2):
        model = create_model(tiny_config(tok.vocab_size), mesh=mesh, seed=2)   # the step donates its parameters
        optimizer = adamw(OPTIM, 10)
        state = init_state(model, optimizer, mesh)
        step_fn = make_train_step(nnx.graphdef(model), optimizer, LossConfig(chunk_size=16, grad_accum=grad_accum,
                                                                            num_tasks=2),
                                  optax.constant_schedule(1.0), optax.constant_schedule(1.0))
        with jax.set_mesh(mesh):
            _, m = jit_train_step(step_fn, state, mesh, batch, model.cfg.sharding_rules)(state, batch)
        m = jax.device_get(m)
        for k in (0, 1):
            rows_k = task_id == k
            np.testing.assert_allclose(m["task_cls_sum"][k], ce[rows_k].sum(), rtol=1e-5)
            assert m["task_rows"][k] == mask[rows_k].sum() == rows_k.sum()
            assert m["task_correct"][k] == correct[rows_k].sum()
        np.testing.assert_allclose(m["task_cls_sum"].sum() / m["task_rows"].sum(), m["cls_loss"], rtol=1e-5)
