"""Thinking evaluation throughput on the real SmolLM2-135M-Instruct: generation + scoring, rows / s.

    python -m benchmarks.thinking [--rows 64 --batch 32 --budgets 64,128]

Demo rows under the chem_harm_thinking task (eval/thinking.py): greedy reasoning up to the budget, then the
prompt + reasoning + "Answer:" scored at its last position. One CPU device, float32. Compile time is the
first pass minus a warm one; rows / s is the warm pass.
"""
from __future__ import annotations

import argparse
import time

import jax

from benchmarks.common import one_device_mesh, print_header
from monitor_jax.data import demo, research
from monitor_jax.eval.evaluator import Evaluator, make_eval_set
from monitor_jax.eval.scoring import Scorer
from monitor_jax.eval.thinking import ThinkingEncoder
from monitor_jax.generate import Sampler
from monitor_jax.model import load_hf
from monitor_jax.model.gguf import SMOLLM2, resolve_model_path
from monitor_jax.model.tokenizer import load_tokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--budgets", default="64,128")
    args = ap.parse_args()
    path = resolve_model_path(SMOLLM2)
    tok = load_tokenizer(path)
    mesh = one_device_mesh()
    model, _ = load_hf(path, mesh=mesh)
    from flax import nnx

    graphdef, params = nnx.split(model)
    task = research.THINKING_TASKS["chem_harm_thinking"]
    rows = demo.demo_rows("chem_harm", "test", n=args.rows)
    print(f"jax {jax.__version__}, one CPU device, float32; SmolLM2-135M-Instruct; {args.rows} chem_harm rows, "
          f"batch {args.batch}, greedy\n")
    print_header("reasoning budget", "rows / s", "s per pass", "reached the marker", "cut by the budget",
                 "mean reasoning tokens", "compile s")
    for budget in (int(b) for b in args.budgets.split(",")):
        enc = ThinkingEncoder(task, tok, max_length=256, max_thinking_tokens=budget)
        sampler = Sampler(graphdef, model.cfg, tok, mesh, batch_size=args.batch,
                          max_prompt_length=enc.prompt_budget, max_new_tokens=budget, buckets=(128, 256))
        scorer = Scorer(graphdef, mesh, args.batch, (128, 192, 256), tok.pad_id)
        evaluator = Evaluator([make_eval_set("chem_thinking", task, False, rows, enc)], scorer, sampler=sampler)
        times = []
        with jax.set_mesh(mesh):
            for _ in range(2):
                t0 = time.perf_counter()
                result = evaluator.run(params)
                times.append(time.perf_counter() - t0)
        th = result.sets[0].extras["thinking"]
        print(f"| {budget} | {args.rows / times[1]:.2f} | {times[1]:.1f} | {th['reached_marker']} | "
              f"{th['cut_by_budget']} | {th['mean_reasoning_tokens']:.1f} | {times[0] - times[1]:.1f} |", flush=True)


if __name__ == "__main__":
    main()
