"""Helpers the benchmark scripts share: timing, Markdown table headers, a one-device model and its AdamW state,
and the transformers + PyTorch classification step they compare against."""
from __future__ import annotations

import time
from typing import Any, Callable

import jax
import optax

from monitor_jax.model import ModelConfig, create_model
from monitor_jax.parallel import make_mesh
from monitor_jax.train.step import init_state


def seconds(fn: Callable[[], Any], reps: int) -> float:
    """Mean wall time of `fn()` after one warm-up call (compilation, first-touch allocation)."""
    jax.block_until_ready(fn())
    t0 = time.perf_counter()
    for _ in range(reps):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / reps


def print_header(*columns: str, right: int = 0) -> None:
    """A Markdown table's header row and rule; the last `right` columns right-aligned."""
    print("| " + " | ".join(columns) + " |")
    print("|" + " --- |" * (len(columns) - right) + " ---: |" * right)


def one_device_mesh() -> jax.sharding.Mesh:
    """The mesh of the first device alone, as the benchmarks measure one process on one device."""
    return make_mesh(data=1, devices=jax.devices()[:1])


def fresh_state(cfg: ModelConfig, learning_rate: float = 1e-4):
    """(mesh, model, optimizer, train state): a random-init model of `cfg` on one device and its AdamW state."""
    mesh = one_device_mesh()
    model = create_model(cfg, mesh=mesh)
    optimizer = optax.adamw(learning_rate)
    return mesh, model, optimizer, init_state(model, optimizer, mesh)


def torch_classification_step(model, opt, ids, mask, labels, target, last_only: bool) -> Callable[[], None]:
    """One optimizer step of a transformers causal LM on a classification batch, the usual way: labels -100
    except the label position, full [B, T, V] logits and masked cross-entropy (what `labels=` does); or the
    careful way, `last_only`: every row left-padded to end at its label position, `logits_to_keep=1`, and
    cross-entropy of the [B, V] logits against `target`."""
    import torch

    def step():
        opt.zero_grad()
        if last_only:
            logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=1).logits[:, -1]
            loss = torch.nn.functional.cross_entropy(logits, target)
        else:
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()

    return step
