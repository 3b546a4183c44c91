"""Plans at the sizes monitors are trained: does each model fit each slice, full fine-tuning and LoRA?

    python -m benchmarks.scaling [--cells qwen3-8b:v5e-64:full,...] [--out DIR] [--jobs 2]
    python -m benchmarks.scaling --all [--models ...] [--targets ...] [--modes full,lora]   # every combination

Each cell is one `plan` command (configs/scale.py: batch 64 x length 2048, FSDP over every device, full remat;
full fine-tuning with float32 parameters computing in bfloat16, LoRA rank 16 on a bfloat16 base), run as its own
process with --output=DIR/MODEL.TARGET.MODE.json; a cell whose JSON is there is not planned again (delete it to
redo); --jobs plans that many cells at once (a compile uses about one core). TPU targets need libtpu (`pip install -e '.[tpu]'`); GPU nodes compile on simulated CPU devices, their memory estimated by layer
(docs/scaling.md).
The default cells are the questions docs/scaling.md answers (each
deep-model cell compiles 8 programs, about a minute each with the TPU compiler on 2 cores; --all is 40 cells).
Prints a markdown table per device: parameters + optimizer state, XLA's total, fit, largest batch, step time
at 40% MFU. Results: docs/scaling.md.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GIB = 1 << 30
GPU_NODES = {"h100x8": ["--devices=8", "--hbm_gib=80", "--peak_tflops=989"],
             "h200x8": ["--devices=8", "--hbm_gib=141", "--peak_tflops=989"]}
CELLS = ("qwen3-0.6b:v5e-8:full,qwen3-0.6b:v5e-8:lora,qwen3-8b:v5e-8:full,qwen3-8b:v5e-8:lora,"
         "qwen3-8b:v5e-64:full,qwen3-8b:v5e-64:lora,qwen3-8b:h100x8:full,qwen3-8b:h100x8:lora,"
         "llama-3.1-8b:v5e-64:full,gemma-3-27b:v5p-128:full,gemma-3-27b:v5p-128:lora")
MODES = {"full": [], "lora": ["--config.lora.rank=16", "--config.lora.alpha=32",
                              "--config.model.param_dtype=bfloat16"]}


def plan_cell(model: str, target: str, mode: str, out: Path, search_rounds: int = 4) -> dict | str:
    """The plan's JSON, or the command's last error line where it failed."""
    path = out / f"{model}.{target}.{mode}.json"
    if not path.is_file():
        where = GPU_NODES.get(target, [f"--topology={target}"])
        cmd = [sys.executable, "-m", "monitor_jax.main", "plan", "--config=configs/scale.py",
               f"--config.model.hf_path=configs/models/{model}", *where, *MODES[mode], f"--output={path}",
               f"--search_rounds={search_rounds}"]
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        if proc.returncode != 0:
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            errors = [line for line in lines if line.startswith("error:")]
            raised = [line for line in lines if re.match(r"[\w.]+(Error|Exception): ", line)]   # a traceback's
            return (errors or raised or ["failed"])[-1]
    return json.loads(path.read_text())


def row(model: str, target: str, mode: str, p: dict | str) -> str:
    if isinstance(p, str):
        return f"| {model} | {target} | {mode} | {p} | | | | | |"
    tr, sc = p["train"], p["score"]
    state = (tr["params"] + tr["optimizer"]) / GIB
    scorer = "refused" if sc["refused"] else f"{sc['total'] / GIB:.1f}"
    if tr["refused"]:
        return (f"| {model} | {target} | {mode} | {state:.1f} | refused by the compiler | no | 0 | "
                f"{tr['step_s_at_mfu']:.2f} | {scorer} |")
    # a star: the memory grew less than the layers' saved inputs need, a row or a layer, and was grown by those;
    # a tilde: the largest batch is the line's estimate, not compiled (--search_rounds=0)
    star = "*" if tr.get("per_row_measured", 0) < tr.get("row_floor", 0) else ""
    star += "" if tr.get("batches_compiled") or not tr["largest_batch"] else "~"
    depth = "*" if "a lower bound" in p["depth"] else ""
    return (f"| {model} | {target} | {mode} | {state:.1f} | {tr['total'] / GIB:.1f}{depth} of {p['hbm'] / GIB:.0f} | "
            f"{'yes' if tr['fits'] else 'no'} | {tr['largest_batch']}{star} | {tr['step_s_at_mfu']:.2f} | {scorer} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cells", default=CELLS, help="model:target:mode, comma-separated")
    ap.add_argument("--all", action="store_true", help="every model x target x mode instead of --cells")
    ap.add_argument("--models", default="qwen3-0.6b,qwen3-8b,llama-3.1-8b,gemma-3-27b")
    ap.add_argument("--targets", default="v5e-8,v5e-64,v5p-128,h100x8,h200x8")
    ap.add_argument("--modes", default="full,lora")
    ap.add_argument("--out", default="runs/scaling")
    ap.add_argument("--jobs", type=int, default=1, help="cells planned at once (a plan compiles on about one core)")
    ap.add_argument("--search_rounds", type=int, default=4, help="plan's: compiles of the largest batch's estimate "
                    "(0: the line's estimate, not compiled)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print("configs/scale.py: batch 64 x length 2048, FSDP over all devices, remat full; per device; scorer: batch 64 x "
          "2048\n")
    print("| model | target | mode | params + optimizer GiB | train total GiB | fits | largest batch | "
          "step s at 40% MFU | scorer GiB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    cells = ([(m, t, mode) for m in args.models.split(",") for t in args.targets.split(",")
              for mode in args.modes.split(",")] if args.all else [tuple(x.split(":")) for x in args.cells.split(",")])
    with ThreadPoolExecutor(args.jobs) as pool:     # rows printed in order, as their cells finish
        plans = pool.map(lambda cell: plan_cell(*cell, out, args.search_rounds), cells)
        for (model, target, mode), p in zip(cells, plans):
            print(row(model, target, mode, p), flush=True)


if __name__ == "__main__":
    main()
