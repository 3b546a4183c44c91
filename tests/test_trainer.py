"""The training loop end to end: resume equality, NaN stop, SIGTERM, config errors, the demo."""
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from monitor_jax.config import ConfigError, validate
from monitor_jax.errors import EXIT_PREEMPTED, TaskError
from monitor_jax.commands.train import train
from monitor_jax.train.trainer import NonFiniteLoss
from tests.train_helpers import run_config as tiny_config

REPO = Path(__file__).resolve().parents[1]


def _hashes(workdir):
    rows = [json.loads(line) for line in open(Path(workdir) / "metrics.jsonl")]
    return {r["step"]: r["train/data_hash"] for r in rows if "train/data_hash" in r}


def test_resume_gives_identical_parameters_and_data_order(tmp_path, demo_tokenizer):
    straight = train(tiny_config(tmp_path / "straight", demo_tokenizer, export_hf=str(tmp_path / "hf")))
    assert straight.status == "finished" and straight.step == 8 and straight.compilations == 1
    assert (tmp_path / "hf" / "config.json").exists() and (tmp_path / "hf" / "tokenizer.json").exists()

    first = train(tiny_config(tmp_path / "resumed", demo_tokenizer, run_steps=4))
    assert first.status == "paused" and first.step == 4
    second = train(tiny_config(tmp_path / "resumed", demo_tokenizer))   # same work directory: resumes
    assert second.status == "finished" and second.step == 8
    # Only train.run_steps differed, which says where a process stops: no settings change to record.
    assert not (tmp_path / "resumed" / "config_changes.jsonl").exists()

    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                 jax.device_get(straight.state.params), jax.device_get(second.state.params))
    assert _hashes(tmp_path / "straight") == _hashes(tmp_path / "resumed")
    assert len(_hashes(tmp_path / "straight")) == 8
    # Only the last `keep` checkpoints remain.
    assert sorted(int(p.name) for p in (tmp_path / "resumed" / "checkpoints").iterdir() if p.name.isdigit()) == [6, 8]


@pytest.mark.slow
def test_a_resume_with_changed_settings_names_and_records_them(tmp_path, demo_tokenizer, capsys):
    first = train(tiny_config(tmp_path / "run", demo_tokenizer, steps=4, run_steps=2))
    assert first.status == "paused"
    c = tiny_config(tmp_path / "run", demo_tokenizer, steps=4)
    c.optim.lr *= 2
    assert train(c).status == "finished"
    out = capsys.readouterr().out
    assert f"resuming {tmp_path / 'run'} at step 2 with changed settings: optim.lr" in out
    (record,) = [json.loads(line) for line in open(tmp_path / "run" / "config_changes.jsonl")]
    assert record["step"] == 2 and record["changed"] == ["optim.lr"] and record["config"]["optim"]["lr"] == c.optim.lr
    # config.json stays the config the run started with.
    assert json.loads((tmp_path / "run" / "config.json").read_text())["optim"]["lr"] == c.optim.lr / 2


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_hard_kill_then_resume_matches_the_uninterrupted_run(tmp_path, demo_tokenizer, lora):
    """SIGKILL at an arbitrary moment: the rerun resumes from the last complete checkpoint. Under LoRA the
    checkpoint holds the adapters and their moments only (the base is rebuilt from its record)."""
    def cmd(workdir):
        return [sys.executable, "-m", "monitor_jax.main", "train", f"--config={REPO / 'configs/demo.py'}",
                f"--config.workdir={workdir}", f"--config.model.tokenizer={demo_tokenizer}", "--config.train.steps=12",
                "--config.train.batch_size=8", "--config.train.log_every=1", "--config.train.checkpoint_every=3",
                "--config.eval.every=0", "--config.train.best_metric=", "--config.model.config.num_layers=1",
                "--config.model.config.embed_dim=32", "--config.model.config.head_dim=8",
                "--config.model.config.mlp_dim=32"] + (
                   ["--config.lora.rank=4", "--config.lora.alpha=8", "--config.optim.lr=1e-2"] if lora else [])
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    env.pop("JAX_PLATFORMS", None)
    # The full run's straight run is started twice at once on one work directory (a requeued job overlapping its
    # predecessor): exactly one trains; the other exits 2 naming it, before writing anything (monitor_jax/lease.py).
    starts = 1 if lora else 2
    straight = [subprocess.Popen(cmd(tmp_path / "straight"), cwd=REPO, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for _ in range(starts)]
    errs = [p.communicate(timeout=600)[1] for p in straight]
    assert sorted(p.returncode for p in straight) == [0, 2][:starts], [err[-2000:] for err in errs]
    if starts == 2:
        winner = next(p for p in straight if p.returncode == 0)
        (error,) = [line for p, err in zip(straight, errs) if p.returncode == 2 for line in err.splitlines()
                    if line.startswith("error:")]
        assert f"in use by a train run on host {socket.gethostname()}, process id {winner.pid}, started 20" in error
        # The survivor alone wrote the directory: each step logged once (and its steps equal the killed run's).
        rows = [json.loads(line) for line in open(tmp_path / "straight" / "metrics.jsonl")]
        assert [r["step"] for r in rows if "train/data_hash" in r] == list(range(1, 13))
    proc = subprocess.Popen(cmd(tmp_path / "killed"), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not (tmp_path / "killed" / "checkpoints" / "6").is_dir():
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    assert not (tmp_path / "killed" / "checkpoints" / "12").exists()   # it really died mid-run
    rerun = subprocess.run(cmd(tmp_path / "killed"), cwd=REPO, env=env, check=True, capture_output=True, text=True)
    # Its lease outlived it; the rerun takes it over and says whose it was and why.
    assert f"took over {tmp_path / 'killed' / '.lease'} from a train run on host {socket.gethostname()}, process id " \
           f"{proc.pid}" in rerun.stderr and f"its process {proc.pid} is no longer running" in rerun.stderr
    import orbax.checkpoint as ocp
    final = [ocp.PyTreeCheckpointer().restore(tmp_path / run / "checkpoints" / "12" / "state")
             for run in ("straight", "killed")]
    jax.tree.map(np.testing.assert_array_equal, final[0]["params"], final[1]["params"])
    assert _hashes(tmp_path / "straight") == _hashes(tmp_path / "killed")
    names = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(final[1]["params"])[0]}
    assert all(("['lora']" in n) == lora for n in names), sorted(names)[:4]
    if lora:    # the adapters trained: B moved off its zero init
        assert any(np.abs(v).max() > 0 for p, v in jax.tree_util.tree_flatten_with_path(final[1]["params"])[0]
                   if "['b']" in jax.tree_util.keystr(p))


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path, demo_tokenizer):
    c = tiny_config(tmp_path / "nan", demo_tokenizer, checkpoint_every=1)
    c.loss.cls_weight = {"kind": "staged", "boundaries": [3], "values": [1.0, math.nan]}
    with pytest.raises(NonFiniteLoss, match=r"non-finite training at step 3: loss=nan.*last good checkpoint is "
                                            r"step 3"):
        train(c)
    import orbax.checkpoint as ocp
    steps = ocp.CheckpointManager(tmp_path / "nan" / "checkpoints").all_steps()
    assert max(steps) == 3
    assert not (tmp_path / "nan" / ".lease").exists()    # released: fixing the config and rerunning starts at once


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_preemption_signal_saves_and_exits_for_a_retry(tmp_path, demo_tokenizer, sig):
    workdir = tmp_path / "preempt"
    cmd = [sys.executable, "-m", "monitor_jax.main", "train", f"--config={REPO / 'configs/demo.py'}",
           f"--config.workdir={workdir}", f"--config.model.tokenizer={demo_tokenizer}", "--config.train.steps=400",
           "--config.train.batch_size=8", "--config.train.log_every=1", "--config.train.checkpoint_every=1000",
           "--config.eval.every=0", "--config.train.best_metric=", "--config.model.config.num_layers=1",
           "--config.model.config.embed_dim=32", "--config.model.config.head_dim=8", "--config.model.config.mlp_dim=32"]
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    env.pop("JAX_PLATFORMS", None)
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = workdir / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 3):
        time.sleep(0.5)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=240)
    # Not 0: Kubernetes and Slurm read 0 as "finished" and would never restart a preempted run.
    assert proc.returncode == EXIT_PREEMPTED == 75, out[-3000:]
    assert not (workdir / ".lease").exists()     # released: the retry starts at once
    assert "preempted at step" in out and f"{sig.name}: saved step" in out
    step = int(out.split("preempted at step ")[1].split(";")[0])
    assert 3 <= step < 400 and (workdir / "checkpoints" / str(step)).is_dir()
    if sig != signal.SIGTERM:
        return
    # The retry an orchestrator makes: the same command resumes where an uninterrupted run would be. Both stop
    # 4 steps past the saved one (train.run_steps, a per-process setting that a resume may change), not at 400.
    end = step + 4
    subprocess.run(cmd + ["--config.train.run_steps=4"], cwd=REPO, env=env, check=True, capture_output=True)
    straight = [a.replace(str(workdir), str(tmp_path / "straight")) for a in cmd]
    subprocess.run(straight + [f"--config.train.run_steps={end}"], cwd=REPO, env=env, check=True,
                   capture_output=True)
    import orbax.checkpoint as ocp
    final = [ocp.PyTreeCheckpointer().restore(run / "checkpoints" / str(end) / "state")
             for run in (workdir, tmp_path / "straight")]
    jax.tree.map(np.testing.assert_array_equal, final[0]["params"], final[1]["params"])
    assert _hashes(workdir) == _hashes(tmp_path / "straight") and max(_hashes(workdir)) == end


def test_config_errors_name_the_key(tmp_path, demo_tokenizer):
    c = tiny_config(tmp_path / "bad", demo_tokenizer)
    c.train.batch_size = 6
    with pytest.raises(ConfigError, match=r"train.batch_size=6 .* not divisible by the data-parallel size "
                                          r"data\*fsdp=4"):
        validate(c, 8)
    c = tiny_config(tmp_path / "bad", demo_tokenizer)
    c.train.best_metric = "eval/mean_heldout_auroc"
    with pytest.raises(ConfigError, match="train.best_metric.*needs eval.tasks and eval.every"):
        validate(c, 8)
    c.train.best_metric = ""
    c.workdir = "gs://bucket/runs/x"
    with pytest.raises(ConfigError, match=r"workdir='gs://bucket/runs/x': URLs are not supported; mount"):
        validate(c, 8)
    with pytest.raises(AttributeError, match="stepz"):
        c.train.stepz = 3  # the config is locked: a misspelt key is an error
    c = tiny_config(tmp_path / "bad", demo_tokenizer)
    c.data.classification = [{"task": "no_such_task", "source": {"kind": "demo", "domain": "chem_harm",
                                                                   "split": "train"}}]
    with pytest.raises(TaskError, match="unknown task 'no_such_task'; registered: "):
        train(c)


def test_label_that_is_not_one_token_is_a_config_error(tmp_path, demo_tokenizer):
    from monitor_jax.data import tasks

    base = tasks.get("chem_harm")
    tasks.register(tasks.with_prompt(base, "chem_harm_wordy", base.messages, positive=" Absolutely harmful"),
                   overwrite=True)
    c = tiny_config(tmp_path / "label", demo_tokenizer)
    c.data.classification = [{"task": "chem_harm_wordy", "source": {"kind": "demo", "domain": "chem_harm",
                                                                      "split": "train"}}]
    with pytest.raises(TaskError, match="task chem_harm_wordy: label ' Absolutely harmful' is not one token"):
        train(c)


@pytest.mark.slow
def test_demo_config_runs_end_to_end(tmp_path):
    """The README's demo at a reduced step count: trains, evaluates before/after, prints the table."""
    out = subprocess.run([sys.executable, "-m", "monitor_jax.main", "train", f"--config={REPO / 'configs/demo.py'}",
                          f"--config.workdir={tmp_path / 'demo'}", "--config.train.steps=20",
                          "--config.eval.every=10", "--config.train.checkpoint_every=10"],
                         cwd=REPO, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "finished at step 20" in out.stdout
    for task in ("chem_harm", "cyber_harm_inverted", "control_arena", "covert_reasoning", "imdb"):
        assert f"| {task} |" in out.stdout
    assert (tmp_path / "demo" / "checkpoints" / "20").is_dir()
    assert any((tmp_path / "demo" / "tensorboard").iterdir())
    # Each source's own loss and accuracy, per logged step: which domain a mixture starves.
    logged = [json.loads(line) for line in (tmp_path / "demo" / "metrics.jsonl").read_text().splitlines()]
    train_rows = [m for m in logged if "train/loss" in m]
    assert [m["step"] for m in train_rows] == [10, 20]   # logged with each evaluation (log_every is 25)
    for m in train_rows:
        assert m["train/cls_rows/chem_harm"] + m["train/cls_rows/cyber_harm"] == m["train/cls_rows"] == 24
        for task in ("chem_harm", "cyber_harm"):
            if m[f"train/cls_rows/{task}"]:
                assert 0 <= m[f"train/cls_accuracy/{task}"] <= 1 and m[f"train/cls_loss/{task}"] > 0


def test_training_starts_from_a_hugging_face_checkpoint(tmp_path, demo_tokenizer):
    """model.hf_path: the run starts from the checkpoint's weights and exports back to transformers."""
    from monitor_jax.model import load_hf
    from tests.hf_models import save_tiny

    hf = save_tiny("qwen3", tmp_path / "base", vocab_size=2048)
    c = tiny_config(tmp_path / "from_hf", demo_tokenizer, steps=2, export_hf=str(tmp_path / "out"))
    c.model.hf_path, c.model.config = str(hf), {}
    c.optim.lr = 0.0   # no update: the exported weights must be the imported ones
    result = train(c)
    assert result.status == "finished"
    base, _ = load_hf(hf)
    out, _ = load_hf(tmp_path / "out")
    np.testing.assert_array_equal(np.asarray(out.embedding[...]), np.asarray(base.embedding[...]))
    np.testing.assert_array_equal(np.asarray(out.layers[1].mlp.down_proj.kernel[...]),
                                  np.asarray(base.layers[1].mlp.down_proj.kernel[...]))
