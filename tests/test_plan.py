"""`plan`: its abstract compile is the real run's program (same memory, same shard bytes), its analytic FLOPs
agree with XLA's count where no loop hides work, and the command answers for a GPU node or says why it cannot."""
import dataclasses
import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from monitor_jax import assemble
from monitor_jax.errors import ConfigError
from monitor_jax.commands.plan import _figures, _growth, plan, report
from monitor_jax.parallel.multihost import global_batch
from monitor_jax.parallel.planner import (Stats, by_layers, bytes_per_device, compiled_stats, held_by_layers,
                                          largest_batch, search_largest_batch)
from monitor_jax.parallel.topology import device_target, slice_shape

REPO = Path(__file__).resolve().parents[1]


def demo_config(workdir, tokenizer, **lora):
    c = runpy.run_path(str(REPO / "configs/demo.py"))["get_config"]()
    c.workdir, c.model.tokenizer = str(workdir), tokenizer
    c.mesh = dict(data=2, fsdp=2, tensor=2)
    c.train.batch_size = 16
    # One loss chunk a row and no accumulation: XLA counts a loop body once, so only then can its FLOP count be
    # compared with the analytic one.
    c.loss.chunk_size = c.data.max_length
    for k, v in lora.items():
        c.lora[k] = v
    return c


@pytest.mark.parametrize("lora_rank", [0, 4])
def test_the_plan_is_the_real_step(tmp_path, demo_tokenizer, lora_rank):
    c = demo_config(tmp_path / "run", demo_tokenizer, **({"rank": lora_rank, "alpha": 8} if lora_rank else {}))
    # The largest batch's estimate compiled once (search_rounds=1) in the LoRA case; the full case keeps it.
    p = plan(c, device_target(8, 16, 197, platform="cpu"), mfu=0.4, search_rounds=1 if lora_rank else 0)

    # The real run: its model, optimizer state and one real batch, on the same 8 devices.
    rt = assemble.runtime(c)
    optimizer = assemble.optimizer(c)
    state = assemble.train_state(rt, optimizer)
    host = next(assemble.data_iterator(assemble.train_data(rt.config, rt.tokenizer, rt.task)))
    from monitor_jax.train.step import jit_train_step

    jitted = jit_train_step(assemble.train_step(rt, optimizer), state, rt.mesh, host, rt.rules, rt.frozen)
    batch = global_batch(host, rt.mesh, rt.rules)
    args = (state, batch) if rt.frozen is None else (state, batch, rt.frozen)
    with jax.set_mesh(rt.mesh):
        real = compiled_stats(jitted.lower(*args).compile())
        new_state, metrics = jitted(*args)
    assert np.isfinite(float(metrics["loss"]))

    tr = p["train"]
    assert tr["trained"] == bytes_per_device(new_state.params)
    assert tr["optimizer"] == bytes_per_device(new_state.opt_state)
    frozen = bytes_per_device(rt.frozen) if rt.frozen is not None else 0
    assert tr["params"] == bytes_per_device(new_state.params) + frozen
    for key in ("arguments", "outputs", "temporaries", "aliased"):
        assert tr[key] == pytest.approx(getattr(real, key), rel=0.1), key
    assert tr["fits"] and tr["largest_batch"] >= 16 and tr["largest_batch"] % 4 == 0
    if lora_rank:
        assert tr["largest_estimate"] in [b for b, _ in tr["batches_compiled"]]     # the estimate was compiled
    # The analytic count is what the compiled step computes, within 10%.
    assert tr["flops"] * 8 == pytest.approx(real.flops * 8, rel=0.01)
    assert tr["flops_analytic"] == pytest.approx(tr["flops"], rel=0.1)
    assert tr["flops_needed"] <= tr["flops_analytic"]
    text = report(p)
    assert "FITS" in text and ("LoRA rank 4" if lora_rank else "full fine-tuning") in text
    # The real step's memory grows with the batch at least by the layers' saved inputs: measured, not floored.
    assert tr["per_row"] == tr["per_row_measured"] >= tr["row_floor"] > 0
    assert "measured: " in text and "saved inputs need" not in text


def test_extrapolation_by_layers_and_the_largest_batch():
    a = Stats(arguments=2, outputs=2, temporaries=12, aliased=2, peak=9, flops=10, bytes_accessed=1)
    b = Stats(arguments=3, outputs=3, temporaries=10, aliased=3, peak=11, flops=20, bytes_accessed=2)
    s, floored = by_layers(a, b, 2, 4, 10)
    assert (s.arguments, s.flops, s.peak) == (6, 50, 17) and not floored
    # The total grows with the peak (1 a layer), from the 2-layer total of 14, not with the temporaries.
    assert s.total == 14 + 8 and s.temporaries == s.total - s.arguments - s.outputs + s.aliased
    # A layer keeps its input (2) besides its arguments (0.5 a layer): the peak's growth of 1 is too little (it
    # was set by something the depth does not change), so the total grows by 2.5 a layer.
    s, floored = by_layers(a, b, 2, 4, 10, saved_per_layer=2)
    assert floored and s.total == 14 + 2.5 * 8 and s.arguments == 6
    # 1.25 a row and nothing fixed: 36 rows fill 45; 0 when not even one multiple fits.
    assert largest_batch(10, 20, 8, 16, 45, 4) == 36 and largest_batch(10, 20, 8, 16, 45, 7) == 35
    assert largest_batch(10, 20, 8, 16, 4, 4) == 0
    # Memory that barely grew (0.0625 a row) grows by the floor instead: 3 a row from 10 at 8 rows.
    assert largest_batch(10, 10.5, 8, 16, 45, 4, min_per_row=3) == 16
    # A GPU's estimate: the 2-layer program's 14 (its peak of 9 and its temporaries' fall ignored), each further
    # layer adding its arguments (0.5) and outputs not aliased (0) and what it holds (3).
    s = held_by_layers(a, b, 2, 4, 10, held_per_layer=3)
    assert s.total == 14 + 3.5 * 8 and (s.arguments, s.outputs, s.aliased, s.flops, s.peak) == (6, 6, 6, 50, 0)


def _cli(*args, env=None):
    env = dict(os.environ if env is None else env)
    env.pop("XLA_FLAGS", None)     # the command restarts itself with the simulated devices it needs
    return subprocess.run([sys.executable, "-m", "monitor_jax.main", "plan", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("args, message", [
    ([], "plan needs a target: --topology=v5e-64"),
    (["--devices=8"], "--devices needs --hbm_gib > 0"),
])
def test_plan_without_a_valid_target_is_one_line_and_exit_2(args, message):
    proc = _cli("--config=configs/demo.py", *args)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]
    assert len([line for line in proc.stderr.splitlines() if line.startswith("error:")]) == 1


def test_slice_shapes():
    with pytest.raises(ConfigError, match="--topology='v5e-7': not a v5e slice size; known: v5e-1, v5e-4"):
        slice_shape("v5e-7")
    with pytest.raises(ConfigError, match="expected a Cloud TPU slice name such as v5e-64"):
        slice_shape("a100-8")
    assert slice_shape("v5e-64")[2] == (8, 8) and slice_shape("v5p-128")[2] == (4, 4, 4)
    assert slice_shape("v4-32")[2] == (2, 2, 4) and slice_shape("v6e-8")[2] == (2, 4)


def test_a_largest_batch_from_memory_that_barely_grew_is_grown_by_the_saved_inputs():
    """Qwen3-8B LoRA on v5e-64 (2 and 4 layers, extrapolated to 36) grew 4.7 MiB a row between 64 and 128 rows,
    its peak set by the vocabulary tables; the layers' saved inputs need 36 x 2048 x 4096 x 2 bytes a row over 64
    chips. The straight line said 2560 rows fit; grown by the saved inputs, 22 rows a chip do."""
    gib, floor = 2**30, 36 * 2048 * 4096 * 2 / 64
    at_64 = Stats(arguments=0.55 * gib, outputs=0.31 * gib, temporaries=3.22 * gib, aliased=0.31 * gib,
                  peak=3.74 * gib, flops=0, bytes_accessed=0)
    at_128 = dataclasses.replace(at_64, temporaries=at_64.temporaries + 64 * 4.7 * 2**20)
    fig = _figures(at_64, at_128, 64, 16 * gib, 64, row_floor=floor)
    assert fig["per_row_measured"] == pytest.approx(4.7 * 2**20) and fig["per_row"] == floor
    assert fig["largest_batch"] == int((16 * gib - at_64.total + 64 * floor) // floor) // 64 * 64 == 1408
    assert _growth(fig, 64) == ("memory grew 4.7 MiB a row between 64 and 128, less than the 9.0 MiB a row the "
                                "layers' saved inputs need: grown by those, a conservative estimate")
    # The scorer keeps nothing for a backward pass: no floor, its measured growth is used.
    fig = _figures(at_64, at_128, 64, 16 * gib, 64)
    assert fig["per_row"] == fig["per_row_measured"] and fig["largest_batch"] > 1408
    assert _growth(fig, 64).startswith("memory linear in the batch between 64 and 128, measured: 4.7 MiB a row")


def test_a_gpu_node_is_planned_from_one_layer_grown_by_what_each_layer_holds(tmp_path, demo_tokenizer):
    """`plan --devices` (a GPU node) compiles on CPU devices, whose compiler keeps far more a layer than a layer
    holds; its plan is the one-layer program's memory, each further layer adding its arguments, its gradients and
    its saved input (full remat) in the train step and its arguments alone in the scorer. Checked against the
    one-layer program compiled for CPU devices and the bytes of the layers' parameters and inputs."""
    out = tmp_path / "plan.json"
    proc = _cli("--config=configs/demo.py", f"--config.workdir={tmp_path / 'run'}", "--config.model.remat=full",
                "--config.mesh.data=2", "--config.mesh.fsdp=2", "--config.mesh.tensor=2",
                "--config.train.batch_size=16", "--devices=8", "--search_rounds=0", "--hbm_gib=80",
                "--peak_tflops=989", f"--output={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "standing in for the GPU's" in proc.stdout and "train step, batch" in proc.stdout
    assert not (tmp_path / "run").exists()        # plan writes nothing but --output
    gpu = json.loads(out.read_text())
    assert gpu["devices"] == 8 and gpu["hbm"] == 80 * 2**30 and gpu["platform"] == "gpu"
    assert "memory estimated for the GPU: the 1-layer program's" in gpu["depth"]

    c = demo_config(tmp_path / "run", demo_tokenizer)
    c.model.remat = "full"
    c.loss.chunk_size = runpy.run_path(str(REPO / "configs/demo.py"))["get_config"]().loss.chunk_size
    layers, d = c.model.config["num_layers"], c.model.config["embed_dim"]
    c.model.config = dict(c.model.config, num_layers=1)
    one = plan(c, device_target(8, 80, 989, platform="cpu"), mfu=0.4, search_rounds=0)
    tr, tr1 = gpu["train"], one["train"]
    kept = {k: (tr[k] - tr1[k]) / (layers - 1) for k in ("arguments", "outputs", "aliased", "trained")}
    assert kept["arguments"] == pytest.approx((tr["params"] + tr["optimizer"] - tr1["params"] - tr1["optimizer"])
                                              / (layers - 1), rel=1e-6)     # a layer's parameters and moments
    saved = c.train.batch_size * c.data.max_length * d * 4 / 4               # float32 input, batch over 2 x 2
    held = kept["trained"] + saved                                           # its gradients and its input
    assert tr["total"] == pytest.approx(tr1["total"] + (layers - 1) * (
        kept["arguments"] + kept["outputs"] - kept["aliased"] + held), rel=1e-9)
    sc, sc1 = gpu["score"], one["score"]
    assert sc["total"] == pytest.approx(sc1["total"] + sc["arguments"] - sc1["arguments"]
                                        + sc["outputs"] - sc1["outputs"], rel=1e-9)
    assert tr["fits"] and sc["fits"] and tr["largest_batch"] > 16
    with pytest.raises(ConfigError, match="--full_depth compiles with the target's own compiler, and a GPU's is not"):
        plan(c, device_target(8, 80, 989), mfu=0.4, full_depth=True)


def test_a_deep_model_extrapolated_by_layer_is_close_to_its_full_depth_compile(tmp_path, demo_tokenizer):
    """The demo at 12 layers is planned from 2 and 4 layers; --full_depth compiles all 12: the parameter and
    optimizer bytes are exact either way, the extrapolated memory within 15% of the whole model's and never
    below the layers' saved inputs."""
    c = demo_config(tmp_path / "run", demo_tokenizer)
    c.model.config = dict(c.model.config, num_layers=12)
    target = device_target(8, 16, 197, platform="cpu")
    deep = plan(c, target, mfu=0.4, search_rounds=0)
    full = plan(c, target, mfu=0.4, full_depth=True, search_rounds=0)
    assert "compiled with 2 and 4 of 12 layers" in deep["depth"] and full["depth"] == "compiled with all 12 layers"
    for key in ("params", "optimizer", "arguments"):
        assert deep["train"][key] == pytest.approx(full["train"][key], rel=1e-6), key
    for prog in ("train", "score"):
        assert deep[prog]["total"] == pytest.approx(full[prog]["total"], rel=0.15), prog
    assert deep["train"]["per_row"] >= deep["train"]["row_floor"] > 0


def test_the_largest_batch_is_compiled_and_corrected_until_it_fits():
    """Memory as the TPU compiler measured Qwen3-8B LoRA on v5e-64 at full depth (GiB a chip, rows a chip): a
    fixed peak of 4.4 until the activations, 0.81 a row, pass it. The line through 1 and 2 rows (grown by the
    saved inputs, 0.56 a row) promises 21 rows; compiled, 21 do not fit, and the secant finds 16, which does."""
    def total(rows):
        return max(4.37 + 0.18 * (rows - 1), 3.0 + 0.81 * rows)

    calls = []

    def total_at(rows):
        calls.append(rows)
        return total(rows)

    measured = {1: total(1), 2: total(2)}
    estimate = largest_batch(total(1), total(2), 1, 2, 16, 1, min_per_row=0.5625)
    assert estimate == 21
    largest, totals = search_largest_batch(total_at, measured, estimate, 16, 1, min_per_row=0.5625)
    assert largest == max(r for r in range(1, 40) if total(r) <= 16) == 16 and calls == [21, 16]
    assert totals[21] > 16 >= totals[16]
    # A refused compile (None) halves the interval; an estimate that fits is kept as it is.
    largest, totals = search_largest_batch(lambda r: None if r > 16 else total(r), measured, 30, 16, 2)
    assert largest == 16 and totals[30] is None
    assert search_largest_batch(total_at, measured, 8, 16, 1)[0] == 8
