"""The train step: one pure function under jax.jit, sharded by the logical-axis rules.

    state, batch, frozen -> forward once (hidden [B, T, D]) of the model (frozen + trained parameters)
                 -> classification CE at label positions + chunked instruction CE
                 -> total = w_cls(step)·L_cls + w_sft(step)·L_sft  (per_source | pooled)
                 -> gradients summed over micro-batches (exactly the large-batch gradient)
                 -> AdamW update; state donated, so parameters are updated in place.

The state holds the trained parameters only: all of them in full fine-tuning, the LoRA adapters in a LoRA run
(model/lora.py), whose base weights come in as `frozen`: read, never differentiated, never donated or copied,
and never in the optimiser state or a checkpoint.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from monitor_jax.data.encode import INSTRUCTION
from monitor_jax.model import Transformer
from monitor_jax.parallel.multihost import batch_sharding
from monitor_jax.settings import setting
from monitor_jax.train.losses import NORMALIZATIONS, by_task, classification_terms, combine, instruction_loss, label_slots


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class TrainState:
    step: jax.Array
    params: nnx.State           # the trained parameters (all, or the LoRA adapters)
    opt_state: Any


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """The `loss` config section, plus what the assembly derives from the data (not settings)."""
    normalization: str = setting("per_source", "per_source: each loss is a mean over its own rows/tokens; "
                                 "pooled: one mean over all", choices=NORMALIZATIONS)
    two_token: bool = setting(False, "classification softmax over the two label tokens only")
    chunk_size: int = setting(256, "instruction loss: positions unembedded at once (data.max_length is a "
                              "multiple)", low=1)
    grad_accum: int = setting(1, "micro-batches per step (their gradients summed: the large-batch gradient)",
                              low=1)
    cls_weight: dict = setting({"kind": "constant", "value": 1.0}, "w_cls(step), the classification loss's "
                               "weight: data.mixing.make_schedule arguments", check=False)
    sft_weight: dict = setting({"kind": "constant", "value": 1.0}, "w_sft(step), the instruction loss's weight",
                               check=False)
    instruction: bool = True         # False: no instruction data in this run, the loss is not even traced
    num_tasks: int = 0               # classification sources (task ids 0..n-1): per-task loss and accuracy


def init_state(model: Transformer, optimizer: optax.GradientTransformation, mesh: Mesh,
               trainable: nnx.filterlib.Filter = nnx.Param) -> TrainState:
    """The state of the `trainable` parameters (all by default; lora.TRAINABLE in a LoRA run). Optimizer state
    created under jit, so it inherits each parameter's sharding."""
    params = nnx.state(model, trainable)
    replicated = NamedSharding(mesh, PartitionSpec())
    opt_state = jax.jit(optimizer.init, out_shardings=opt_state_shardings(optimizer, params, mesh))(params)
    return TrainState(jax.device_put(jnp.zeros((), jnp.int32), replicated), params, opt_state)


def opt_state_shardings(optimizer: optax.GradientTransformation, params: Any, mesh: Mesh) -> Any:
    """Each optimizer-state leaf's sharding: a moment takes its parameter's (FSDP shards the optimizer state with
    the parameters), anything else (step counts) is replicated. Declared, not left to the compiler: under plain
    jit, zeros made from a parameter's shape carry no sharding, and the moments came out replicated on every
    device (the planner found it: 8x the optimizer memory of an 8-way FSDP mesh)."""
    replicated = NamedSharding(mesh, PartitionSpec())
    shapes = jax.eval_shape(optimizer.init, params)
    return optax.tree_map_params(optimizer, lambda _, sharding: sharding, shapes,
                                 jax.tree.map(lambda x: x.sharding, params),
                                 transform_non_params=lambda _: replicated)


def batch_counts(batch: dict) -> tuple[jax.Array, jax.Array]:
    """Classification examples (label slots in use) and instruction target tokens of the whole batch."""
    n_cls = jnp.sum(label_slots(batch)[0]).astype(jnp.float32)
    n_sft = jnp.sum(batch["weights"] * (batch["kind"] == INSTRUCTION)[:, None])
    return n_cls, n_sft


def frozen_params(model: Transformer, trainable: nnx.filterlib.Filter = nnx.Param) -> nnx.State:
    """The parameters the step reads but does not train (empty in full fine-tuning)."""
    return nnx.state(model, nnx.All(nnx.Param, nnx.Not(trainable)))


def model_params(params: nnx.State, frozen: nnx.State | None) -> nnx.State:
    """The whole model's parameters: the trained ones, with the frozen ones (a LoRA run's base) when there are."""
    return params if frozen is None else nnx.merge_state(frozen, params)


def make_micro_loss(graphdef: nnx.GraphDef, loss_cfg: LossConfig) -> Callable:
    """micro_loss(params, frozen, micro, n_cls, n_sft, w_cls, w_sft) -> (loss, aux): one micro-batch's share of
    the step's loss, normalised by the whole batch's counts; `make_train_step` differentiates it in `params`."""

    def micro_loss(params, frozen, micro, n_cls, n_sft, wc, ws):
        model = nnx.merge(graphdef, frozen, params)
        hidden_BxTxD = model.hidden_states(micro["tokens"], segment_ids=micro["segment_ids"],
                                           positions=micro["positions"])
        ce_N, correct_N, mask_N = classification_terms(model.unembed, hidden_BxTxD, micro, loss_cfg.two_token)
        cls_sum = jnp.sum(ce_N)
        sft_sum = (instruction_loss(model.unembedding(), hidden_BxTxD, micro, loss_cfg.chunk_size)[0]
                   if loss_cfg.instruction else jnp.zeros((), jnp.float32))
        # Normalised by the whole batch's counts, so micro-batch losses sum to the batch loss.
        loss = combine(cls_sum, n_cls, sft_sum, n_sft, wc, ws, loss_cfg.normalization)
        aux = dict(cls_sum=cls_sum, sft_sum=sft_sum, correct=jnp.sum(correct_N))
        if loss_cfg.num_tasks:   # which source a mixture starves: each task's own loss and accuracy
            task_N = label_slots(micro)[1]
            aux.update({f"task_{k}": by_task(v, task_N, loss_cfg.num_tasks)
                        for k, v in (("cls_sum", ce_N), ("rows", mask_N), ("correct", correct_N))})
        return loss, aux

    return micro_loss


def make_train_step(graphdef: nnx.GraphDef, optimizer: optax.GradientTransformation, loss_cfg: LossConfig,
                    w_cls: Callable, w_sft: Callable) -> Callable:
    """train_step(state, batch, frozen) -> (state, metrics); jit it with `jit_train_step`."""
    micro_loss = make_micro_loss(graphdef, loss_cfg)

    def train_step(state: TrainState, batch: dict, frozen: nnx.State):
        n_cls, n_sft = batch_counts(batch)
        wc, ws = w_cls(state.step), w_sft(state.step)
        k = loss_cfg.grad_accum
        micro_batches = jax.tree.map(lambda x: x.reshape(k, x.shape[0] // k, *x.shape[1:]), batch)
        grad_fn = jax.value_and_grad(micro_loss, has_aux=True)

        def accumulate(carry, micro):
            loss, aux, grads = carry
            (l, a), g = grad_fn(state.params, frozen, micro, n_cls, n_sft, wc, ws)
            return (loss + l, jax.tree.map(jnp.add, aux, a), jax.tree.map(jnp.add, grads, g)), None

        aux_zeros = dict(cls_sum=jnp.zeros(()), sft_sum=jnp.zeros(()), correct=jnp.zeros(()))
        if loss_cfg.num_tasks:
            aux_zeros.update({f"task_{k}": jnp.zeros(loss_cfg.num_tasks) for k in ("cls_sum", "rows", "correct")})
        zeros = (jnp.zeros(()), aux_zeros, jax.tree.map(jnp.zeros_like, state.params))
        (loss, aux, grads), _ = jax.lax.scan(accumulate, zeros, micro_batches)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = dict(loss=loss, cls_loss=aux["cls_sum"] / jnp.maximum(n_cls, 1), cls_rows=n_cls,
                       cls_accuracy=aux["correct"] / jnp.maximum(n_cls, 1),
                       sft_loss=aux["sft_sum"] / jnp.maximum(n_sft, 1), sft_tokens=n_sft,
                       w_cls=jnp.asarray(wc, jnp.float32), w_sft=jnp.asarray(ws, jnp.float32),
                       grad_norm=optax.tree.norm(grads), param_norm=optax.tree.norm(params),
                       **{k: v for k, v in aux.items() if k.startswith("task_")})   # [num_tasks] sums
        return TrainState(state.step + 1, params, opt_state), metrics

    return train_step


def state_shardings(state: TrainState):
    return jax.tree.map(lambda x: x.sharding, state)


def jit_train_step(train_step: Callable, state: TrainState, mesh: Mesh, batch_example: dict, rules,
                   frozen: nnx.State | None = None):
    """Explicit in/out shardings from the state's, the batch's and the frozen parameters'; the state is donated
    (the frozen parameters are not: every step reads them again). `frozen=None`: the jitted step takes
    (state, batch)."""
    replicated = NamedSharding(mesh, PartitionSpec())
    batch_spec = {k: batch_sharding(mesh, v.ndim, rules) for k, v in batch_example.items()}
    shardings = state_shardings(state)
    if frozen is None:   # nothing frozen (full fine-tuning): the jitted step takes (state, batch)
        return jax.jit(lambda state, batch: train_step(state, batch, nnx.State({})),
                       in_shardings=(shardings, batch_spec), out_shardings=(shardings, replicated),
                       donate_argnums=(0,))
    frozen_spec = jax.tree.map(lambda x: x.sharding, frozen)
    return jax.jit(train_step, in_shardings=(shardings, batch_spec, frozen_spec),
                   out_shardings=(shardings, replicated), donate_argnums=(0,))
