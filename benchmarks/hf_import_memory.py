"""Peak host memory while importing a ~1 GB Hugging Face checkpoint, against its size on disk.

    python -m benchmarks.hf_import_memory [--layers 12] [--hidden 1024]

Writes a random-init Llama checkpoint with transformers, then imports it with
`load_hf` in fresh processes (one device; and an 8-way FSDP mesh of simulated
CPU devices) and prints the peak resident memory above the post-import-of-jax
baseline. On CPU the "device" arrays live in host memory too, so one full copy
of the parameters is the floor; the loader should add only about one tensor.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import print_header

CHILD = r"""
import json, os, resource, sys, threading, time
import psutil
import jax
import numpy as np
from monitor_jax.model import load_hf
from monitor_jax.parallel import make_mesh
proc = psutil.Process()
jax.numpy.zeros(1).block_until_ready()
base = proc.memory_info().rss
peak = [base]
stop = False
def sample():
    while not stop:
        peak[0] = max(peak[0], proc.memory_info().rss)
        time.sleep(0.002)
t = threading.Thread(target=sample); t.start()
mesh = make_mesh(data=1, fsdp=-1) if sys.argv[2] == "fsdp" else None
model, cfg = load_hf(sys.argv[1], mesh=mesh)
jax.block_until_ready(jax.tree.leaves(jax.tree.map(lambda x: x, __import__("flax").nnx.state(model))))
stop = True; t.join()
after = proc.memory_info().rss
nbytes = sum(x.nbytes for x in jax.tree.leaves(__import__("flax").nnx.state(model)))
print(json.dumps(dict(base=base, peak=max(peak[0], after), after=after, param_bytes=nbytes,
                      maxrss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)))
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--vocab", type=int, default=32000)
    args = ap.parse_args()
    import torch
    import transformers

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "ckpt"
        cfg = transformers.LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden,
                                       intermediate_size=4 * args.hidden, num_hidden_layers=args.layers,
                                       num_attention_heads=args.hidden // 64, num_key_value_heads=args.hidden // 128,
                                       tie_word_embeddings=False)
        with torch.device("meta"):
            pass
        model = transformers.LlamaForCausalLM(cfg)
        model.save_pretrained(str(ckpt))
        del model
        disk = sum(f.stat().st_size for f in ckpt.glob("*.safetensors"))
        largest = max(p.numel() * 4 for p in transformers.LlamaForCausalLM(cfg).parameters())
        rows = []
        for mode, flags in (("1 device", ""), ("fsdp=8 (8 CPU devices)", "--xla_force_host_platform_device_count=8")):
            env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
            out = subprocess.run([sys.executable, "-c", CHILD, str(ckpt), "fsdp" if flags else "none"],
                                 env=env, capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append((mode, r))
    gib = 2**30
    print(f"checkpoint on disk: {disk / gib:.3f} GiB (float32), largest tensor {largest / gib:.3f} GiB\n")
    print_header("placement", "params held", "peak RSS above baseline", "peak / disk size",
                 "(peak - params) / largest tensor")
    for mode, r in rows:
        extra = r["peak"] - r["base"]
        print(f"| {mode} | {r['param_bytes'] / gib:.3f} GiB | {extra / gib:.3f} GiB | {extra / disk:.2f} | "
              f"{(extra - r['param_bytes']) / largest:.2f} |")


if __name__ == "__main__":
    main()
