"""Sweeps: a grid of config overrides -> named runs, each an ordinary `train` work directory.

A run's name comes from its overrides alone (`value-0.5_seed-1`), so it is stable across calls; its command
is `python -m monitor_jax.main train --config=SWEEP/runs/NAME/config.py`, a two-line config file that loads
the sweep's config and applies the run's overrides (any JSON value, lists of sources included). Because a run
is a work directory, a finished run is one whose final checkpoint exists, and an unfinished one resumes.

Executors: `local` runs the commands here, `parallel` at a time (with `devices` split between them through
an environment variable such as CUDA_VISIBLE_DEVICES); `slurm_script` and `kubernetes_job` write specs
for clusters the user already has, one array index per run, running the same commands.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from monitor_jax.errors import ConfigError
from monitor_jax.settings import setting


EXECUTORS = ("local", "slurm", "kubernetes")


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """The `sweep` config section: one `train` run per grid point, under WORKDIR/runs/NAME."""
    grid: tuple = setting((), "((config key, (values)) or (key, (values), (display names)), ...): every "
                          "combination", check=False)
    seeds: tuple = setting((), "each seed sets `seed` and `data.seed` (() = the config's own)", check=False)
    paired: tuple = setting((), "((grid key, treatment, baseline), ...): `report` adds AUROC(treatment) - "
                            "AUROC(baseline) per seed on the same rows, their mean and a paired bootstrap interval "
                            "(values as the report labels them: display names where given)", check=False)
    executor: str = setting("local", "local: run them here | slurm | kubernetes: write the spec, print how to "
                            "submit", choices=EXECUTORS)
    parallel: int = setting(1, "local: runs at once; run slot k gets devices[k::parallel] in device_env", low=1)
    device_env: str = setting("CUDA_VISIBLE_DEVICES", "the variable that gives a local run slot its devices")
    devices: tuple = setting((), "the devices split among local run slots", check=False)
    sbatch: dict = setting({}, "slurm: extra #SBATCH options, e.g. {'time': '04:00:00', 'gpus-per-task': 1}",
                           check=False)
    python: str = setting("", "the interpreter in every run's command ('' = this one; e.g. 'python' in images)")
    image: str = setting("", "kubernetes: an image with monitor_jax installed and WORKDIR mounted at its path")
    resources: dict = setting({}, "kubernetes: the container's resources, e.g. {'limits': {'nvidia.com/gpu': 1}}",
                              check=False)


def label(value: Any, names: list[str] | None, values: list) -> str:
    """A grid value as the report shows it: its display name where given."""
    if names is not None:
        return names[values.index(value)]
    return f"{value:g}" if isinstance(value, float) else str(value)


def grid_labels(grid: Mapping[str, list], names: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """{grid key: its values' labels as the report shows them (display names where given)}."""
    return {k: [label(v, names.get(k), grid[k]) for v in grid[k]] for k in grid}


def check_paired(specs, labels: Mapping[str, list[str]], where: str) -> list[tuple[str, str, str]]:
    """`specs` ((grid key, treatment label, baseline label), ...) checked against the grid's labels."""
    out = []
    for i, spec in enumerate(specs):
        if not (isinstance(spec, (list, tuple)) and len(spec) == 3 and all(isinstance(x, str) for x in spec)):
            raise ConfigError(f"{where}[{i}]={spec!r} must be (grid key, treatment, baseline) as strings")
        key, treatment, baseline = spec
        if key not in labels:
            raise ConfigError(f"{where}[{i}]: {key!r} is not a grid key of this sweep ({', '.join(labels) or 'none'})")
        for v in (treatment, baseline):
            if v not in labels[key]:
                raise ConfigError(f"{where}[{i}]: {v!r} is not one of {key}'s values as the report labels them "
                                  f"({', '.join(labels[key])})")
        if treatment == baseline:
            raise ConfigError(f"{where}[{i}]: the treatment and the baseline are both {treatment!r}")
        out.append((key, treatment, baseline))
    return out


@dataclasses.dataclass(frozen=True)
class Run:
    name: str
    overrides: dict[str, Any]       # config key -> value


def _short(key: str, keys: Sequence[str]) -> str:
    """The key's last part, or more of it when two grid keys share their last part."""
    parts = key.split(".")
    for k in range(1, len(parts) + 1):
        tail = ".".join(parts[-k:])
        if sum(other == tail or other.endswith("." + tail) for other in keys) == 1:
            return tail
    return key


def _value(v: Any) -> str:
    if isinstance(v, float):
        v = f"{v:g}"
    elif not isinstance(v, (str, int, bool)):
        v = str(v)
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", str(v)).strip("-") or "x"


def expand(grid: Mapping[str, Sequence[Any]], seeds: Sequence[int] = (), names: Mapping[str, Sequence[str]] | None
           = None) -> list[Run]:
    """The cartesian product of `grid` (key -> values), times `seeds` (each sets `seed` and `data.seed`).

    `names[key]` gives display names for a key's values (e.g. for lists of training sources), else the
    value itself is written into the run's name."""
    keys = list(grid)
    names = dict(names or {})
    runs = []
    for combo in itertools.product(*(list(enumerate(grid[k])) for k in keys)):
        for seed in (list(seeds) or [None]):
            overrides = {k: v for k, (_, v) in zip(keys, combo)}
            parts = [f"{_short(k, keys).replace('.', '-')}-{_value(names[k][i] if k in names else v)}"
                     for k, (i, v) in zip(keys, combo)]
            if seed is not None:
                overrides.update({"seed": seed, "data.seed": seed})
                parts.append(f"seed-{seed}")
            runs.append(Run("_".join(parts) or "base", overrides))
    dupes = sorted({r.name for r in runs if [x.name for x in runs].count(r.name) > 1})
    if dupes:
        raise ValueError(f"several runs are named {dupes}: give their values display names")
    return runs


def run_config_file(sweep_config: str | Path, run: Run, workdir: str | Path, flags: Mapping[str, Any] = {}) -> str:
    """The text of a run's config file: the sweep's config, the sweep's command-line overrides (`flags`), the
    run's overrides and its work directory."""
    overrides = {**dict(flags), **run.overrides}
    return (f'"""Run {run.name} of the sweep {Path(sweep_config).name}: written by the sweep command."""\n'
            f"import json\nimport runpy\n\nfrom monitor_jax.config import set_key\n\n\n"
            f"def get_config():\n"
            f"    c = runpy.run_path({str(Path(sweep_config).resolve())!r})['get_config']()\n"
            f"    for key, value in json.loads({json.dumps(overrides)!r}).items():\n"
            f"        set_key(c, key, value)\n"
            f"    c.workdir = {str(Path(workdir).resolve())!r}\n"
            f"    return c\n")


def command(run_dir: str | Path, python: str = "python") -> list[str]:
    """The command that trains (or resumes) one run."""
    return [python, "-m", "monitor_jax.main", "train", f"--config={Path(run_dir).resolve() / 'config.py'}"]


def finished(workdir: str | Path, steps: int, evaluated: bool = False) -> bool:
    """The run saved its final step (orbax renames a step directory into place only once it is complete) and,
    when it has eval sets (`evaluated`), wrote the final report: a run killed while evaluating after its last
    step is not finished, and `train` run again restores that step and evaluates."""
    w = Path(workdir)
    return (w / "checkpoints" / str(steps)).is_dir() and (
        not evaluated or (w / "eval" / str(steps) / "report.json").is_file())


# What a run was written with: its full resolved config (JSON), kept beside its config.py. A run that started is
# only ever skipped or resumed under the same settings.
RECORD = "sweep_run.json"


def run_settings(config) -> dict[str, Any]:
    """A run's full resolved config as plain JSON, less the `sweep` section (how runs are launched, which no
    run reads: a grid that grows leaves its finished runs as they are)."""
    out = json.loads(config.to_json_best_effort())
    out.pop("sweep", None)
    return out


def started(workdir: str | Path) -> bool:
    """The run began training: it wrote its config.json (at step 0) or a checkpoint."""
    w = Path(workdir)
    return (w / "config.json").is_file() or any((w / "checkpoints").glob("*"))


def recorded_config(workdir: str | Path) -> dict | None:
    """The settings a run ran with: the config its training wrote when it started (config.json), else the one
    the sweep wrote it with (RECORD), else None; as `run_settings` gives them."""
    w = Path(workdir)
    if (w / "config.json").is_file():
        out = json.loads((w / "config.json").read_text())
        out.pop("sweep", None)
        return out
    if (w / RECORD).is_file():
        return json.loads((w / RECORD).read_text())["config"]
    return None


def record(run: Run, config: Mapping[str, Any]) -> str:
    """The text of RECORD for `run` with its full resolved config (plain JSON)."""
    return json.dumps(dict(name=run.name, overrides=run.overrides, config=config), indent=2, sort_keys=True) + "\n"


def _launch():
    """The launch/ templates (package data of `monitor_jax.launch`, mapped by setup.py)."""
    try:
        import monitor_jax.launch as launch
        import monitor_jax.launch.gke.render as render
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(f"{e}: this install of monitor_jax predates the launch/ templates; install it again "
                                  f"(pip install -e .)") from None
    return launch, render


SBATCH = re.compile(r"^#SBATCH --([A-Za-z-]+)(?:=(.*))?$", re.M)
COMMAND_BLOCK = re.compile(r"^# >>> command.*?^# <<< command$", re.M | re.S)
# A sweep run is one process: one node, one task (jax.distributed stays off), one GPU; `sweep.sbatch` overrides.
SWEEP_SBATCH = {"nodes": 1, "ntasks-per-node": 1, "gpus-per-node": 1}


def slurm_script(commands: Sequence[str], sweep_dir: str | Path, sbatch: Mapping[str, Any]) -> str:
    """launch/slurm/train.sbatch as a job array: index i runs commands[i] (its arguments are set from
    SLURM_ARRAY_TASK_ID), so a preempted run requeues itself as the launcher does. `sbatch` holds #SBATCH options
    over the launcher's and SWEEP_SBATCH (a value of None drops one, True writes a bare flag)."""
    launch, _ = _launch()
    template = launch.path("slurm/train.sbatch").read_text()
    sweep_dir = Path(sweep_dir).resolve()
    options = {**dict(SBATCH.findall(template)), **SWEEP_SBATCH,
               "job-name": f"sweep-{sweep_dir.name}", "output": f"{sweep_dir}/runs/slurm-%A_%a.log",
               "array": f"0-{len(commands) - 1}", **dict(sbatch)}
    header = "\n".join(f"#SBATCH --{k}" if v is True or v == "" else f"#SBATCH --{k}={v}"
                       for k, v in options.items() if v is not None)
    command = "\n".join(["# >>> command: the run of this array index (its line in commands.txt)",
                         'case "${SLURM_ARRAY_TASK_ID:?not an array job: submit this script with sbatch}" in']
                        + [f"  {i}) set -- {c} ;;" for i, c in enumerate(commands)]
                        + ['  *) echo "no run for array index $SLURM_ARRAY_TASK_ID" >&2; exit 2 ;;', "esac",
                           "# <<< command"])
    lines = template.split("\n")
    first = next(i for i, line in enumerate(lines) if SBATCH.match(line))
    lines = [line for line in lines[:first] if not SBATCH.match(line)] + [header] + [
        line for line in lines[first:] if not SBATCH.match(line)]
    lines.insert(1, f"# Written by `python -m monitor_jax.main sweep` from launch/slurm/train.sbatch; submit with: "
                    f"sbatch {sweep_dir / 'slurm.sh'}")
    return COMMAND_BLOCK.sub(lambda _: command, "\n".join(lines))


def kubernetes_job(commands: Sequence[str], name: str, image: str, parallelism: int,
                   resources: Mapping[str, Any]) -> dict[str, Any]:
    """An Indexed Job whose completion index i runs commands[i]: the pod template and exit-code policy of
    launch/gke/gpu.yaml for one process (no JAX_* coordinator: a plain Job's pods have no hostnames to name
    one), with a retry budget per run; a run's config error (exit 2) fails that run only. The sweep directory
    must be on a shared volume at the same path in the container."""
    _, render = _launch()
    # 50 characters: the pods' hostnames (NAME-INDEX) stay within DNS's 63.
    name = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:50].strip("-") or "sweep"
    script = "\n".join(["set -euo pipefail", "case \"$JOB_COMPLETION_INDEX\" in"]
                       + [f"  {i}) exec {c} ;;" for i, c in enumerate(commands)]     # exec: python gets SIGTERM
                       + ["  *) exit 2 ;;", "esac"])
    jobset = render.gpu_jobset(name, image, ["bash", "-c", script], nodes=1, resources=resources)
    spec = jobset["spec"]["replicatedJobs"][0]["template"]["spec"]
    container = spec["template"]["spec"]["containers"][0]
    container["env"] = [e for e in container.get("env", []) if not e["name"].startswith("JAX_")]
    if not container["env"]:
        del container["env"]
    for rule in spec["podFailurePolicy"]["rules"]:
        if rule["action"] == "FailJob":
            rule["action"] = "FailIndex"
    del spec["backoffLimit"]
    spec.update(completions=len(commands), parallelism=parallelism, backoffLimitPerIndex=3,
                maxFailedIndexes=len(commands))
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": spec}


def run_local(jobs: Sequence[tuple[str, list[str], Path]], parallel: int = 1, device_env: str = "",
              devices: Sequence[str] = (), say=print) -> dict[str, int]:
    """Run (name, command, log file) jobs here, `parallel` at a time; returns each job's exit code.

    With `devices`, job slot k gets devices[k::parallel] in the environment variable `device_env`."""
    codes: dict[str, int] = {}
    slots: list[tuple[str, subprocess.Popen, Any] | None] = [None] * parallel
    queue = list(jobs)
    while queue or any(slots):
        for k, slot in enumerate(slots):
            if slot is not None and slot[1].poll() is not None:
                name, proc, log = slot
                log.close()
                codes[name] = proc.returncode
                say(f"sweep: run {name} exited {proc.returncode}")
                slots[k] = None
            if slots[k] is None and queue:
                name, cmd, log_path = queue.pop(0)
                env = dict(os.environ)
                if devices:
                    env[device_env] = ",".join(str(d) for d in list(devices)[k::parallel])
                log_path.parent.mkdir(parents=True, exist_ok=True)
                log = open(log_path, "a")
                say(f"sweep: run {name}: {shlex.join(cmd)} (log {log_path})")
                slots[k] = (name, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log)
        time.sleep(0.2)
    return codes


PYTHON = sys.executable
