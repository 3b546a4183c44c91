"""Thinking evaluation throughput on the real SmolLM2-135M-Instruct: generation + scoring, rows / s.

    python benchmarks/thinking.py [--rows 64 --batch 32 --budgets 64,128]

Demo rows under the chem_harm_thinking task (eval/thinking.py): greedy reasoning up to the budget, then the
prompt + reasoning + "Answer:" scored at its last position. One CPU device, float32. Compile time is the
first pass minus a warm one; rows / s is the warm pass.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monitor_jax.data import demo, research  # noqa: E402
from monitor_jax.eval.evaluator import Evaluator, make_eval_set  # noqa: E402
from monitor_jax.eval.scoring import Scorer  # noqa: E402
from monitor_jax.eval.thinking import ThinkingEncoder  # noqa: E402
from monitor_jax.generate import Sampler  # noqa: E402
from monitor_jax.model import load_hf  # noqa: E402
from monitor_jax.model.gguf import SMOLLM2, resolve_model_path  # noqa: E402
from monitor_jax.model.tokenizer import load_tokenizer  # noqa: E402
from monitor_jax.parallel import make_mesh  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--budgets", default="64,128")
    args = ap.parse_args()
    path = resolve_model_path(SMOLLM2)
    tok = load_tokenizer(path)
    mesh = make_mesh(data=1, devices=jax.devices()[:1])
    model, _ = load_hf(path, mesh=mesh)
    from flax import nnx

    graphdef, params = nnx.split(model)
    task = research.THINKING_TASKS["chem_harm_thinking"]
    rows = demo.demo_rows("chem_harm", "test", n=args.rows)
    print(f"jax {jax.__version__}, one CPU device, float32; SmolLM2-135M-Instruct; {args.rows} chem_harm rows, "
          f"batch {args.batch}, greedy\n")
    print("| reasoning budget | rows / s | s per pass | reached the marker | cut by the budget | mean reasoning "
          "tokens | compile s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for budget in (int(b) for b in args.budgets.split(",")):
        enc = ThinkingEncoder(task, tok, max_length=256, max_thinking_tokens=budget)
        sampler = Sampler(graphdef, tok, mesh, cfg=model.cfg, batch_size=args.batch,
                          max_prompt_length=enc.prompt_budget, max_new_tokens=budget, buckets=(128, 256))
        scorer = Scorer(graphdef, mesh, args.batch, (128, 192, 256), tok.pad_id)
        evaluator = Evaluator([make_eval_set("chem_thinking", task, False, rows, enc)], scorer, sampler=sampler)
        times = []
        with jax.set_mesh(mesh):
            for _ in range(2):
                t0 = time.perf_counter()
                result = evaluator.run(params)
                times.append(time.perf_counter() - t0)
        th = result["tasks"][0]["thinking"]
        print(f"| {budget} | {args.rows / times[1]:.2f} | {times[1]:.1f} | {th['reached_marker']} | "
              f"{th['cut_by_budget']} | {th['mean_reasoning_tokens']:.1f} | {times[0] - times[1]:.1f} |", flush=True)


if __name__ == "__main__":
    main()
