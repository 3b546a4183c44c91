"""Mixed precision: float32 against bfloat16 compute, bfloat16 first moments and bfloat16 parameters.

Two tables. (1) The demo config (configs/demo.py: its model, data, optimiser and schedule) trained for
STEPS steps under each policy, same seeds: the largest relative gap of the training loss to the float32 run,
the mean gap over the last 10 steps, the optimiser state's bytes and the step time. (2) The real
SmolLM2-135M-Instruct: the largest log-odds gap on the demo eval prompts between float32 and bfloat16
compute, and the compiled step's memory (XLA's memory_analysis) at batch 8 x 128.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m benchmarks.precision [--steps=50]
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
POLICIES = {   # name -> (model.param_dtype, model.dtype, optim.mu_dtype)
    "float32": ("float32", "float32", "float32"),
    "bf16 compute": ("float32", "bfloat16", "float32"),
    "bf16 compute + bf16 mu": ("float32", "bfloat16", "bfloat16"),
    "bf16 params + bf16 mu": ("bfloat16", "bfloat16", "bfloat16"),
}


def demo_run(workdir: Path, policy, steps: int):
    sys.path.insert(0, str(REPO))
    from configs.demo import get_config
    from monitor_jax.runs import train_run

    c = get_config()
    c.workdir = str(workdir)
    c.model.param_dtype, c.model.dtype, c.optim.mu_dtype = policy
    c.train.steps, c.train.log_every, c.train.checkpoint_every = steps, 1, steps
    c.eval.tasks, c.eval.every, c.train.best_metric = [], 0, ""
    t0 = time.perf_counter()
    result = train_run(c)
    seconds = time.perf_counter() - t0
    losses = {r["step"]: r["train/loss"] for r in map(json.loads, open(workdir / "metrics.jsonl"))
              if "train/loss" in r}
    opt_bytes = sum(x.nbytes for x in __import__("jax").tree.leaves(result.state.opt_state))
    return losses, opt_bytes, seconds / steps


def compiled_memory(policy, batch: int = 32, length: int = 128) -> dict[str, float]:
    """XLA's memory analysis of the demo model's classification step on one device (MiB): arguments (the state
    and the batch), temporaries (activations kept for the backward, workspace), and their peak."""
    import jax
    import optax
    from flax import nnx

    from benchmarks.common import one_device_mesh
    from monitor_jax.model import ModelConfig, create_model
    from monitor_jax.train.step import LossConfig, init_state, jit_train_step, make_train_step

    sys.path.insert(0, str(REPO))
    from configs.demo import get_config

    from monitor_jax.data import demo, research
    from monitor_jax.data.encode import ClassificationEncoder, pad
    from monitor_jax.data.pipeline import stack
    from monitor_jax.model.tokenizer import load_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        demo.build_demo_tokenizer(tmp)
        tok = load_tokenizer(tmp)
    enc = ClassificationEncoder(research.TASKS["chem_harm"], tok, length)
    rows = stack([pad(enc(r), length, tok.pad_id) for r in demo.demo_rows("chem_harm", "test", n=batch)])
    param_dtype, dtype, mu_dtype = policy
    cfg = ModelConfig(vocab_size=tok.vocab_size, param_dtype=param_dtype, dtype=dtype,
                      **dict(get_config().model.config))
    mesh = one_device_mesh()
    model = create_model(cfg, mesh=mesh)
    opt = optax.adamw(1e-3, mu_dtype=mu_dtype)
    state = init_state(model, opt, mesh)
    step = make_train_step(nnx.graphdef(model), opt, LossConfig(instruction=False), optax.constant_schedule(1.0),
                           optax.constant_schedule(0.0))
    with jax.set_mesh(mesh):
        m = jit_train_step(step, state, mesh, rows, cfg.sharding_rules).lower(state, rows).compile().memory_analysis()
    mib = lambda x: x / 2**20  # noqa: E731
    peak = max(getattr(m, "peak_memory_in_bytes", 0), m.argument_size_in_bytes + m.output_size_in_bytes
               + m.temp_size_in_bytes - m.alias_size_in_bytes)
    return dict(arguments=mib(m.argument_size_in_bytes), temporaries=mib(m.temp_size_in_bytes), peak=mib(peak))


def main(steps: int = 50) -> None:
    print(f"| policy (param, compute, mu) | max rel. loss gap over {steps} steps | mean rel. gap, last 10 | "
          f"final loss | optimiser state MiB | s/step (incl. compile) |")
    print("| --- | --- | --- | --- | --- | --- |")
    ref = None
    with tempfile.TemporaryDirectory() as tmp:
        for name, policy in POLICIES.items():
            losses, opt_bytes, per_step = demo_run(Path(tmp) / name.replace(" ", "_"), policy, steps)
            s = np.array([losses[k] for k in sorted(losses)])
            ref = s if ref is None else ref
            gap = np.abs(s - ref) / ref
            print(f"| {name} ({', '.join(policy)}) | {gap.max():.4f} | {gap[-10:].mean():.4f} | {s[-1]:.4f} | "
                  f"{opt_bytes / 2**20:.2f} | {per_step:.3f} |", flush=True)


    print("\n| policy | compiled step: arguments MiB | temporaries MiB | peak MiB |")
    print("| --- | --- | --- | --- |")
    for name, policy in POLICIES.items():
        m = compiled_memory(policy)
        print(f"| {name} | {m['arguments']:.1f} | {m['temporaries']:.1f} | {m['peak']:.1f} |", flush=True)


if __name__ == "__main__":
    args = dict(a.lstrip("-").split("=") for a in sys.argv[1:])
    main(int(args.get("steps", 50)))
