"""One writer per directory (monitor_jax/lease.py): real processes hold, contend for and take over leases.

The end-to-end checks with the real `train` command (two started together on one work directory; kill -9 of a
holder, then the same command again) are in tests/test_trainer.py::test_hard_kill_then_resume_matches_the_
uninterrupted_run, which reuses its runs.
"""
import json
import os
import socket
import subprocess
import sys
import threading
import time
import types
import uuid
from pathlib import Path

import pytest

from monitor_jax import lease
from monitor_jax.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]

# A process that holds or takes a lease, as a command would: `hold DIR` holds it until killed; `take DIR AT
# RELEASE` tries at wall-clock time AT, prints `won` or `refused: MESSAGE` (exit 2), and a winner holds it until
# the file RELEASE exists (without RELEASE: releases at once).
AGENT = r"""
import logging, os, sys, time
logging.basicConfig(level=logging.INFO, format="%(message)s")
from monitor_jax import lease
from monitor_jax.errors import ConfigError
action, directory = sys.argv[1], sys.argv[2]
at = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
release = sys.argv[4] if len(sys.argv) > 4 else ""
time.sleep(max(0.0, at - time.time()))
try:
    with lease.hold(directory, "test", "--config.workdir") as held:
        print("held" if action == "hold" else "won", held.token, flush=True)
        deadline = time.time() + (120 if action == "hold" or release else 0)
        while time.time() < deadline and not (release and os.path.exists(release)):
            time.sleep(0.05)
except lease.DirectoryInUse as e:
    print("refused:", e, flush=True)
    sys.exit(2)
"""


def _env(**extra):
    env = dict(os.environ, PYTHONPATH=str(REPO), **{k: str(v) for k, v in extra.items()})
    return env


def _agent(action, directory, at=0.0, release="", **env):
    return subprocess.Popen([sys.executable, "-c", AGENT, action, str(directory), str(at), str(release)], cwd=REPO,
                            env=_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _held(proc):
    """Wait for a `hold` agent to hold its lease; its token."""
    line = proc.stdout.readline()
    assert line.startswith("held"), line + proc.stderr.read()
    return line.split()[1]


def _read(directory):
    return json.loads((Path(directory) / lease.FILE).read_text())


def _write(directory, **fields):
    """A lease record written as another host's holder would write it."""
    now = time.time()
    rec = dict(host="elsewhere-7", boot_id="b", pidns="pid:[1]", pid=4242, pid_start="1", what="train",
               command="python -m monitor_jax.main train --config=x.py", start=lease._clock(now - 50),
               token=uuid.uuid4().hex, heartbeat=now, beat=3, heartbeat_s=0.25, stale_s=1.5, claim="")
    rec.update(fields)
    tmp = Path(directory) / "lease.tmp"
    tmp.write_text(json.dumps(rec))
    os.replace(tmp, Path(directory) / lease.FILE)
    return rec


def _killed_holder(directory):
    """A lease left by a holder that was killed with SIGKILL: the record of a dead process on this host."""
    holder = _agent("hold", directory)
    _held(holder)
    holder.kill()
    holder.wait()
    return holder.pid


def test_a_lease_is_held_renewed_and_released(tmp_path, monkeypatch):
    monkeypatch.setenv("MONITOR_JAX_LEASE_HEARTBEAT_S", "0.1")
    with lease.hold(tmp_path / "run", "train") as held:
        rec = _read(tmp_path / "run")
        assert (rec["host"], rec["pid"], rec["token"], rec["what"]) == (socket.gethostname(), os.getpid(),
                                                                         held.token, "train")
        time.sleep(0.5)
        renewed = _read(tmp_path / "run")
        assert renewed["token"] == rec["token"] and renewed["beat"] >= 2 and renewed["heartbeat"] > rec["heartbeat"]
    assert os.listdir(tmp_path / "run") == []
    # Released on an error too (a user error exits 2; the rerun must start at once).
    with pytest.raises(ConfigError, match="bad key"), lease.hold(tmp_path / "run", "train"):
        raise ConfigError("bad key")
    assert os.listdir(tmp_path / "run") == []


def test_a_second_process_is_refused_naming_the_holder_and_touches_nothing(tmp_path):
    run = tmp_path / "run"
    with lease.hold(run, "train") as held:
        (run / "metrics.jsonl").write_text("{}\n")
        before = {p.name: p.read_bytes() for p in run.iterdir()}
        t = time.time()
        other = _agent("take", run)
        out, err = other.communicate(timeout=60)
        assert other.returncode == 2, out + err
        assert time.time() - t < 20             # decided at once: the holder runs on this host
        rec = _read(run)
        assert rec["token"] == held.token
        message = " ".join(out.split())
        for part in (f"{run} is in use by a train run on host {socket.gethostname()}", f"process id {os.getpid()}",
                     f"started {rec['start']}", "(command: ", "is running on this host", "--config.workdir="):
            assert part in message, message
        assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_a_holder_killed_with_sigkill_is_taken_over_on_its_host_and_reported(tmp_path):
    dead = _killed_holder(tmp_path)
    assert _read(tmp_path)["pid"] == dead          # kill -9 leaves the lease behind
    taker = _agent("take", tmp_path)
    out, err = taker.communicate(timeout=60)
    assert taker.returncode == 0 and out.startswith("won"), out + err
    (line,) = [x for x in err.splitlines() if "took over" in x]
    assert f"took over {tmp_path / lease.FILE} from a test run on host {socket.gethostname()}, process id {dead}" \
           in line and f"its process {dead} is no longer running on host" in line
    assert os.listdir(tmp_path) == []              # the taker released it in turn


def test_a_foreign_lease_with_an_old_heartbeat_is_taken_over_at_once(tmp_path):
    old = _write(tmp_path, heartbeat=time.time() - 1000, stale_s=90.0, heartbeat_s=10.0)
    t = time.time()
    taker = _agent("take", tmp_path)
    out, err = taker.communicate(timeout=60)
    assert taker.returncode == 0 and out.startswith("won"), out + err
    assert time.time() - t < 20
    line = " ".join(x for x in err.splitlines() if "took over" in x)
    assert f"on host elsewhere-7, process id 4242, started {old['start']}" in line
    assert "its last heartbeat is 1000 s old by this host's clock (stale after 90 s" in line


def test_a_foreign_lease_is_watched_stale_if_its_heartbeat_stops_live_if_it_advances(tmp_path):
    """Another host's pid cannot be checked: its heartbeat must stop for the holder's stale timeout (1.5 s
    here), or be seen to advance."""
    stopped, beating = tmp_path / "stopped", tmp_path / "beating"
    stopped.mkdir()
    beating.mkdir()
    _write(stopped)                                   # fresh, then never renewed: a holder that just died
    rec = _write(beating)
    done = threading.Event()

    def beat():                                       # a holder on another host, renewing every 0.25 s
        while not done.wait(0.25):
            rec.update(heartbeat=time.time(), beat=rec["beat"] + 1)
            _write(beating, **rec)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        t = time.time()
        takers = [_agent("take", d) for d in (stopped, beating)]
        (out1, err1), (out2, err2) = [p.communicate(timeout=60) for p in takers]
    finally:
        done.set()
        thread.join()
    assert takers[0].returncode == 0 and out1.startswith("won"), out1 + err1
    assert "its content did not change while this process watched it for" in err1
    assert takers[1].returncode == 2, out2 + err2
    assert "in use by a train run on host elsewhere-7, process id 4242" in out2
    assert "its heartbeat advanced while this process watched it" in out2
    assert time.time() - t < 30


def test_simultaneous_takeovers_have_exactly_one_winner(tmp_path):
    """Several processes find the same stale lease at the same instant: one takes it over, the others are
    refused naming that one, and nothing is left once it releases."""
    for round_ in range(3):
        work = tmp_path / str(round_)
        dead = _killed_holder(work)
        release = tmp_path / f"release{round_}"
        at = time.time() + 1.5                       # after every taker has started
        takers = [_agent("take", work, at, release) for _ in range(5)]
        lines = {}
        for p in takers:
            lines[p.pid] = p.stdout.readline().strip()
        winners = [pid for pid, line in lines.items() if line.startswith("won")]
        assert len(winners) == 1, lines
        for pid, line in lines.items():
            if pid != winners[0]:
                assert line.startswith("refused:") and f"process id {winners[0]}," in line, line
        assert _read(work)["pid"] == winners[0]
        release.touch()
        for p in takers:
            p.communicate(timeout=60)
        assert [p.returncode for p in takers].count(0) == 1
        assert os.listdir(work) == [], (dead, os.listdir(work))


def test_a_takeover_waits_for_a_live_claim_and_passes_a_dead_one(tmp_path):
    """The claim (DIR/.lease.TOKEN.N.takeover, created exclusively) lets one process replace a stale lease: no one
    else replaces it while that process lives; a claim whose process died is passed over."""
    _killed_holder(tmp_path)
    stale = _read(tmp_path)
    claim = tmp_path / f"{lease.FILE}.{stale['token']}.0.takeover"
    claim.write_text(json.dumps(dict(stale, pid=os.getpid(), pid_start="")))   # this process is taking it over
    taker = _agent("take", tmp_path)
    time.sleep(1.5)
    assert taker.poll() is None and _read(tmp_path)["token"] == stale["token"]
    claim.write_text(json.dumps(stale))                   # ... and died mid-takeover (the killed holder's pid)
    out, err = taker.communicate(timeout=60)
    assert taker.returncode == 0 and out.startswith("won"), out + err
    assert "took over" in err and os.listdir(tmp_path) == []


def test_a_holder_whose_lease_is_taken_over_stops_at_once(tmp_path):
    holder = _agent("hold", tmp_path, MONITOR_JAX_LEASE_HEARTBEAT_S=0.1)
    _held(holder)
    other = _write(tmp_path, heartbeat=time.time())   # another process judged it dead and took it over
    out, err = holder.communicate(timeout=60)
    assert holder.returncode == 2, out + err
    assert f"error: lost the lease {tmp_path / lease.FILE}: it was taken over by a train run on host elsewhere-7" \
           in err
    assert _read(tmp_path)["token"] == other["token"]    # the new holder's lease is left alone


@pytest.mark.parametrize("command", ["sweep", "elicit", "export"])
def test_sweep_elicit_and_export_are_refused_before_writing(tmp_path, demo_tokenizer, command, capsys):
    """Their directories (the sweep's work directory, elicit's, export's --output) have one writer too."""
    from monitor_jax.main import run

    target = tmp_path / ("out" if command == "export" else "work")
    with lease.hold(target, "train"):
        if command == "elicit":
            from monitor_jax.commands import elicit
            from tests.test_elicit import _config

            rows = tmp_path / "rows.jsonl"
            rows.write_text(json.dumps({"transcript": "x"}) + "\n")
            with pytest.raises(lease.DirectoryInUse, match=f"{target} is in use by a train run on host .*, "
                                                           f"process id {os.getpid()}, started "):
                elicit.run(_config(target, rows), types.SimpleNamespace(stage=""))
        else:
            config = REPO / ("configs/paper/mixing_ratio.py" if command == "sweep" else "configs/demo.py")
            argv = ["main", command, f"--config={config}", f"--config.model.tokenizer={demo_tokenizer}"]
            argv += [f"--output={target}"] if command == "export" else [f"--config.workdir={target}"]
            assert run(argv) == 2
            err = " ".join(capsys.readouterr().err.split())
            assert err.startswith(f"error: {target} is in use by a train run on host") and \
                   f"process id {os.getpid()}" in err
        assert os.listdir(target) == [lease.FILE]


def test_every_process_of_a_multi_host_job_is_refused_together(tmp_path, demo_tokenizer):
    """Process 0 tries the lease and tells the others: both processes of a 2-process job exit 2 with the holder
    named, and nothing is written."""
    from tests.test_multihost import _free_port

    base = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "SLURM_", "TPU_"))}
    base.update(JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=4", PYTHONPATH=str(REPO))
    port = _free_port()
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "monitor_jax.main", "train", f"--config={REPO / 'configs/demo.py'}",
           f"--config.workdir={run}", f"--config.model.tokenizer={demo_tokenizer}", "--config.train.steps=2",
           "--config.train.batch_size=8", "--config.mesh.data=2", "--config.mesh.fsdp=2", "--config.mesh.tensor=2"]
    with lease.hold(run, "train"):
        procs = [subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=dict(base, JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES="2",
                                           JAX_PROCESS_ID=str(i)))
                 for i in range(2)]
        outs = [p.communicate(timeout=300) for p in procs]
        for p, (out, err) in zip(procs, outs):
            assert p.returncode == 2, out[-2000:] + err[-3000:]
            error = [line for line in err.splitlines() if line.startswith("error:")]
            assert len(error) == 1 and f"{run} is in use by a train run on host {socket.gethostname()}, process id " \
                                       f"{os.getpid()}" in error[0], err[-3000:]
        assert os.listdir(run) == [lease.FILE]
    assert os.listdir(run) == []
