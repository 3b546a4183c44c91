"""The TPU compiler, without a TPU: the demo's train step (full fine-tuning and LoRA), scorer and sampler are
lowered and compiled by libtpu for a v5e-8 slice (libtpu's abstract topology, 8 chips on 2 hosts) on a
(data, fsdp, tensor) = (2, 2, 2) mesh, so a sharding or a lowering that only the TPU compiler rejects fails here
first. libtpu is a test requirement (`jax[tpu]` in the test extras): nothing here is skipped without it."""
import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import jax
import pytest
from jax.sharding import NamedSharding

from monitor_jax.commands.plan import compile_sampler, compile_scorer, compile_train, plan_model_config
from monitor_jax.parallel.mesh import make_mesh
from monitor_jax.parallel.planner import bytes_per_device, compiled_stats
from monitor_jax.parallel.topology import tpu_target

REPO = Path(__file__).resolve().parents[1]
MESH = dict(data=2, fsdp=2, tensor=2)


@pytest.fixture(scope="module")
def v5e_mesh():
    # As `plan --topology` does: jax's persistent cache writes TPU executables it cannot read back without a
    # TPU client (a warning on every hit).
    cache = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    target = tpu_target("v5e-8")
    assert target.num_devices == 8 and target.hosts == 2 and target.target_compiler
    assert {d.platform for d in target.devices} == {"tpu"}
    assert all("v5" in d.device_kind.lower() for d in target.devices), target.devices[0].device_kind
    yield make_mesh(**MESH, devices=list(target.devices))
    jax.config.update("jax_enable_compilation_cache", cache)


def demo(tmp_path, **lora):
    c = runpy.run_path(str(REPO / "configs/demo.py"))["get_config"]()
    c.workdir, c.model.tokenizer = str(tmp_path / "run"), "demo"
    c.mesh = dict(MESH)
    c.train.batch_size = 16
    for k, v in lora.items():
        c.lora[k] = v
    return c


def _placed(tree, compiled_shardings):
    """Every leaf's sharding as the compiled program takes it equals the one it was declared with (no reshard
    inserted at the program's boundary), and lives on the TPU devices."""
    got = jax.tree.leaves(compiled_shardings, is_leaf=lambda s: isinstance(s, NamedSharding))
    assert len(got) == len(jax.tree.leaves(tree))
    for x, g in zip(jax.tree.leaves(tree), got):
        assert g.is_equivalent_to(x.sharding, x.ndim), (x.sharding, g)
        assert {dev.platform for dev in g.device_set} == {"tpu"}


@pytest.mark.parametrize("lora_rank", [0, 4], ids=["full", "lora"])
def test_train_step_compiles_for_v5e_8(tmp_path, v5e_mesh, lora_rank):
    c = demo(tmp_path, **({"rank": lora_rank, "alpha": 8} if lora_rank else {}))
    compiled, params, opt_state, frozen = compile_train(c, plan_model_config(c), v5e_mesh, c.train.batch_size)
    state_in = compiled.input_shardings[0][0].params     # args (state, batch[, frozen]): the state's params
    _placed(params, state_in)
    stats = compiled_stats(compiled)
    # The TPU compiler's own figures: a peak, FLOPs, and the state (params + moments) among the arguments,
    # donated into the outputs.
    held = bytes_per_device(params) + bytes_per_device(opt_state)
    assert stats.peak > 0 and stats.flops > 0
    assert stats.arguments >= held and stats.aliased >= held
    if lora_rank:   # only the adapters are trained; the base is an argument, not donated
        assert bytes_per_device(params) < bytes_per_device(frozen) / 10


def test_scorer_and_sampler_compile_for_v5e_8(tmp_path, v5e_mesh):
    c = demo(tmp_path)
    cfg = plan_model_config(c)
    scorer, params = compile_scorer(c, cfg, v5e_mesh, batch_size=16, length=max(c.eval.buckets))
    s = compiled_stats(scorer)
    assert s.peak > 0 and s.flops > 0 and s.arguments >= bytes_per_device(params)
    sampler, _ = compile_sampler(c, cfg, v5e_mesh, batch_size=8, prompt_length=64, new_tokens=16)
    g = compiled_stats(sampler)
    assert g.peak > 0 and g.arguments >= bytes_per_device(params)


def test_plan_command_for_a_v5e_8_slice(tmp_path):
    out = tmp_path / "plan.json"
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run([sys.executable, "-m", "monitor_jax.main", "plan", "--config=configs/demo.py",
                           f"--config.workdir={tmp_path / 'run'}", "--topology=v5e-8", "--search_rounds=0",
                           f"--output={out}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    p = json.loads(out.read_text())
    assert p["devices"] == 8 and p["hosts"] == 2 and p["hbm"] == 16 * 2**30 and p["target_compiler"]
    assert p["train"]["fits"] and p["score"]["fits"] and p["train"]["peak"] > 0
    assert "the TPU compiler (libtpu) on the abstract topology" in proc.stdout
    assert "8 devices on 2 host(s)" in proc.stdout
