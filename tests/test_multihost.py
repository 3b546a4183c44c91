"""A real 2-process run (jax.distributed on localhost, 4 CPU devices each) trains, evaluates and generates like
1 process. The evaluation includes thinking and summarization sets (configs/paper/thinking_demo.py), so the
sampler's multi-host slices run inside evaluation too."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _cmd(workdir, tokenizer):
    return [sys.executable, "-m", "monitor_jax.main", "train", f"--config={REPO / 'configs/paper/thinking_demo.py'}",
            f"--config.workdir={workdir}", f"--config.model.tokenizer={tokenizer}", "--config.train.steps=4",
            "--config.train.batch_size=8", "--config.train.log_every=1", "--config.train.checkpoint_every=2",
            "--config.eval.every=4", "--config.eval.max_rows=40", "--config.eval.bootstrap=0",
            "--config.mesh.data=2", "--config.mesh.fsdp=2", "--config.mesh.tensor=2",
            "--config.model.config.num_layers=1", "--config.model.config.embed_dim=32",
            "--config.model.config.head_dim=8", "--config.model.config.mlp_dim=32"]


def _eval_rows(workdir):
    rows = [json.loads(line) for line in open(Path(workdir) / "metrics.jsonl")]
    return {r["step"]: {k: v for k, v in r.items() if k.startswith("eval/")} for r in rows if "eval/mean_auroc" in r}


@pytest.mark.slow
def test_two_processes_train_and_evaluate_like_one(tmp_path):
    from monitor_jax.data.demo import build_demo_tokenizer

    tokenizer = tmp_path / "tok"
    build_demo_tokenizer(tokenizer)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "SLURM_", "TPU_"))}
    base["JAX_PLATFORMS"] = "cpu"
    one = subprocess.run(_cmd(tmp_path / "one", tokenizer), cwd=REPO, capture_output=True, text=True, timeout=600,
                         env=dict(base, XLA_FLAGS="--xla_force_host_platform_device_count=8"))
    assert one.returncode == 0, one.stderr[-3000:]

    port = _free_port()
    procs = [subprocess.Popen(_cmd(tmp_path / "two", tokenizer), cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True,
                              env=dict(base, XLA_FLAGS="--xla_force_host_platform_device_count=4",
                                       JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES="2",
                                       JAX_PROCESS_ID=str(i)))
             for i in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    assert "finished at step 4" in outs[0] and "finished at step 4" not in outs[1]   # process 0 reports

    # Same global batches, same update: the two runs' final parameters agree.
    import jax
    import orbax.checkpoint as ocp
    checkpointer = ocp.PyTreeCheckpointer()
    one_state = checkpointer.restore(tmp_path / "one" / "checkpoints" / "4" / "state")
    # The 2-process checkpoint names devices of both processes: restore it onto this process's shardings.
    two_state = checkpointer.restore(tmp_path / "two" / "checkpoints" / "4" / "state", item=one_state,
                                     restore_args=ocp.checkpoint_utils.construct_restore_args(one_state))
    assert int(two_state["step"]) == 4
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), one_state["params"],
                 two_state["params"])
    # Scores gathered across the processes give the same evaluation.
    evals = [_eval_rows(tmp_path / run) for run in ("one", "two")]
    assert sorted(evals[0]) == sorted(evals[1]) == [0, 4]
    assert {"eval/control_arena_thinking/mean_reasoning_tokens", "eval/control_arena_summary/auroc"} <= set(evals[1][4])
    for step in evals[0]:
        for k, v in evals[0][step].items():
            np.testing.assert_allclose(evals[1][step][k], v, rtol=1e-5, atol=1e-6, err_msg=f"step {step} {k}")

    # generate: each process feeds its slice of every batch; process 0 writes the same rows as one process.
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": f"Is request {i} harmful?"}) for i in range(5)) + "\n")
    gen = ["--config.generate.max_new_tokens=5", "--config.generate.max_prompt_length=64",
           "--config.generate.buckets=(64,)", "--config.generate.temperature=0.8", "--config.generate.seed=2",
           f"--input={prompts}", f"--checkpoint={tmp_path / 'one'}"]

    def generate_cmd(out):
        cmd = _cmd(tmp_path / "gen", tokenizer)
        return [cmd[0], cmd[1], cmd[2], "generate", *cmd[4:], *gen, f"--output={out}"]

    one = subprocess.run(generate_cmd(tmp_path / "one.jsonl"), cwd=REPO, capture_output=True, text=True,
                         timeout=600, env=dict(base, XLA_FLAGS="--xla_force_host_platform_device_count=8"))
    assert one.returncode == 0, one.stderr[-3000:]
    port = _free_port()
    procs = [subprocess.Popen(generate_cmd(tmp_path / "two.jsonl"), cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True,
                              env=dict(base, XLA_FLAGS="--xla_force_host_platform_device_count=4",
                                       JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES="2",
                                       JAX_PROCESS_ID=str(i)))
             for i in range(2)]
    for p in procs:
        out = p.communicate(timeout=600)[0]
        assert p.returncode == 0, out[-3000:]
    rows = [sorted((json.loads(line) for line in open(tmp_path / f"{n}.jsonl")), key=lambda r: r["index"])
            for n in ("one", "two")]
    assert len(rows[0]) == 5 and rows[0] == rows[1]
