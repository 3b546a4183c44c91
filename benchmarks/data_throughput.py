"""Input pipeline throughput against what a training step consumes, at the demo size.

    python -m benchmarks.data_throughput [--steps 40]

Rows/s through encoding (chat template + tokenizer), packing, the scheduled
mixture and batching, on one CPU process with no worker threads; against
rows/s consumed by the jitted train step of the demo model and batch on this
machine. The input side must not be the bottleneck (ratio > 1); grain's
prefetch threads then overlap it with the step.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import jax
from flax import nnx

from benchmarks.common import print_header


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    args = ap.parse_args()
    from configs.demo import get_config
    from monitor_jax import assemble
    from monitor_jax.data.mixing import optax_schedule
    from monitor_jax.parallel.multihost import global_batch
    from monitor_jax.train.step import LossConfig, init_state, jit_train_step, make_train_step

    c = get_config()
    c.workdir = tempfile.mkdtemp()
    tokenizer, _ = assemble.tokenizer(c)
    t0 = time.perf_counter()
    data = assemble.train_data(c, tokenizer)          # includes the length pass of the packed stream
    setup_s = time.perf_counter() - t0
    B = c.train.batch_size
    t0 = time.perf_counter()
    for s in range(args.steps):
        data[s]
    data_s = (time.perf_counter() - t0) / args.steps

    mesh = assemble.mesh(c)
    model = assemble.model(c, mesh, tokenizer)
    optimizer = assemble.optimizer(c)
    state = init_state(model, optimizer, mesh)
    step_fn = make_train_step(nnx.graphdef(model), optimizer, LossConfig(chunk_size=c.loss.chunk_size),
                              optax_schedule("constant", value=1.0), optax_schedule("constant", value=1.0))
    batches = [global_batch(data[s], mesh) for s in range(5)]
    jitted = jit_train_step(step_fn, state, mesh, data[0], model.cfg.sharding_rules)
    with jax.set_mesh(mesh):
        state, m = jitted(state, batches[0])
        jax.block_until_ready(m)
        t0 = time.perf_counter()
        n = 0
        for _ in range(3):
            for b in batches:
                state, m = jitted(state, b)
                n += 1
        jax.block_until_ready(m)
    step_s = (time.perf_counter() - t0) / n
    print(f"demo config: batch {B}, length {c.data.max_length}, model {model.cfg.num_params() / 1e6:.2f}M params, "
          f"{jax.device_count()} CPU device(s); one-off stream setup {setup_s:.1f} s\n")
    print_header("stage", "s / batch", "rows / s")
    print(f"| encode + pack + mix + batch (1 process, no threads) | {data_s:.4f} | {B / data_s:.0f} |")
    print(f"| jitted train step (consumes) | {step_s:.4f} | {B / step_s:.0f} |")
    print(f"\ninput / consumption ratio: {step_s / data_s:.1f}x")


if __name__ == "__main__":
    main()
