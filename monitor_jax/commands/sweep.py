"""`sweep`: one `train` run per point of `sweep.grid` (times `sweep.seeds`), each its own work directory.

    WORKDIR/sweep.json        the runs: name, overrides, work directory, command
    WORKDIR/commands.txt      one command per line (line i = run i = array index i)
    WORKDIR/slurm.sh          a Slurm job array over those commands (`sbatch WORKDIR/slurm.sh`)
    WORKDIR/job.yaml          a Kubernetes Indexed Job over the same commands (`kubectl apply -f ...`)
    WORKDIR/runs/NAME/        config.py (the sweep's config + the run's overrides), the run's work directory,
                              train.log (local executor)

With `sweep.executor=local` the commands run here (`sweep.parallel` at a time). A run whose final
checkpoint exists is skipped; an unfinished one resumes from its own checkpoints, so a killed sweep is
completed by running the same command again. `report --sweep=WORKDIR` tabulates and plots the results.

Each run's full resolved config is recorded beside its config.py (runs/NAME/sweep_run.json). A run that has
started is skipped or resumed only under exactly those settings: if they changed (the config file, a flag, a
default), the sweep stops with an error naming the runs and the changed keys, and neither their config.py nor
their checkpoints are touched. Use a new work directory, or `--rerun_changed` to delete those runs and run them
again.
"""
from __future__ import annotations

import json
import math
import shlex
import shutil
from pathlib import Path

import jax
import yaml

from monitor_jax import lease
from monitor_jax.config import ConfigError, changed_keys, set_key, sweep_grid, validate
from monitor_jax.errors import EXIT_OK, EXIT_PREEMPTED, EXIT_USER_ERROR
from monitor_jax.studies import sweep as sweeps


def _write(path: Path, text: str) -> None:
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)


def _check_changed(plans, rerun_changed: bool) -> None:
    """A run that started under other settings than its config now gives is an error naming it and the
    changed keys (its files untouched), or, with --rerun_changed, deleted so that it runs again."""
    changed = {}
    for r, c in plans:
        if not sweeps.started(c.workdir):
            continue    # written but never run: its config.py is rewritten freely
        old = sweeps.recorded_config(c.workdir)
        new = sweeps.run_settings(c)
        if old is None:
            changed[r.name] = ["(no record of the settings it ran with)"]
        elif old != new:
            changed[r.name] = changed_keys(old, new)
    if not changed:
        return
    what = "; ".join(f"run {name}: {', '.join(keys)}" for name, keys in changed.items())
    if not rerun_changed:
        raise ConfigError(f"sweep: {len(changed)} run(s) already started with other settings than the config now "
                          f"gives them ({what}); their files are left as they are. Use a new work directory "
                          f"(--config.workdir=...), or --rerun_changed to delete those runs and run them again")
    for r, c in plans:
        if r.name in changed:
            print(f"sweep: run {r.name}: its settings changed ({', '.join(changed[r.name])}); deleting {c.workdir} "
                  f"to run it again (--rerun_changed)")
            with lease.hold(c.workdir, "sweep --rerun_changed"):     # never under a run still writing it
                for p in Path(c.workdir).iterdir():
                    if not p.name.startswith(lease.FILE):
                        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


def run(config, flags=None) -> int:
    # Not jax.process_count(): that would start this process's accelerator backend (on a GPU host, taking
    # the memory the runs need). A launcher joined to a multi-process job is the case to refuse.
    if jax.distributed.is_initialized():
        raise ConfigError("sweep launches runs from one host; for multi-host runs submit WORKDIR/slurm.sh or "
                          "WORKDIR/job.yaml (written by `sweep --config.sweep.executor=slurm`)")
    # One sweep per work directory: its lease covers the files it writes there (sweep.json, the specs, each run's
    # config.py); each run's `train` holds its own run directory's lease, so local runs never wait on this one.
    with lease.hold(Path(config.workdir).resolve(), "sweep", "--config.workdir"):
        return _sweep(config, flags)


def _sweep(config, flags) -> int:
    # Each run's config file loads the sweep's config file and applies the sweep's own --config.KEY=VALUE
    # flags, then the run's grid point.
    config_path, cli = flags["config"].config_filename, dict(flags["config"].override_values or {})
    grid, names = sweep_grid(config)
    s = config.sweep
    paired = sweeps.check_paired(s.paired, sweeps.grid_labels(grid, names), "sweep.paired")
    runs = sweeps.expand(grid, list(s.seeds), names)
    sweep_dir = Path(config.workdir).resolve()
    # Each run's config must hold up before anything starts. The device count is the mesh's own product
    # (this process never touches the accelerators the runs will use; each run validates again).
    plans = []
    for r in runs:
        c = config.copy_and_resolve_references()
        for key, value in r.overrides.items():
            set_key(c, key, value)
        c.workdir = str(sweep_dir / "runs" / r.name)
        try:
            validate(c, max(1, math.prod(v for v in dict(c.mesh).values() if v > 0)))
        except ConfigError as e:
            raise ConfigError(f"sweep run {r.name}: {e}") from None
        plans.append((r, c))
    _check_changed(plans, bool(getattr(flags, "rerun_changed", False)))
    commands = [sweeps.command(sweep_dir / "runs" / r.name, s.python or sweeps.PYTHON) for r, _ in plans]
    for (r, c), cmd in zip(plans, commands):
        (sweep_dir / "runs" / r.name).mkdir(parents=True, exist_ok=True)
        _write(sweep_dir / "runs" / r.name / "config.py", sweeps.run_config_file(config_path, r, c.workdir, cli))
        _write(sweep_dir / "runs" / r.name / sweeps.RECORD, sweeps.record(r, sweeps.run_settings(c)))
    lines = [shlex.join(cmd) for cmd in commands]
    grid_record = [[k, v, names[k]] if k in names else [k, v] for k, v in grid.items()]   # names label the report
    record = dict(config=str(Path(config_path).resolve()), flags=cli, grid=grid_record,
                  seeds=list(s.seeds), paired=[list(p) for p in paired],
                  runs=[dict(name=r.name, overrides=r.overrides, workdir=c.workdir, steps=c.train.steps, command=line)
                        for (r, c), line in zip(plans, lines)])
    _write(sweep_dir / "sweep.json", json.dumps(record, indent=2) + "\n")
    _write(sweep_dir / "commands.txt", "\n".join(lines) + "\n")
    _write(sweep_dir / "slurm.sh", sweeps.slurm_script(lines, sweep_dir, dict(s.sbatch)))
    _write(sweep_dir / "job.yaml", yaml.safe_dump(sweeps.kubernetes_job(
        lines, f"sweep-{sweep_dir.name}", s.image or "YOUR_IMAGE_WITH_MONITOR_JAX", s.parallel,
        json.loads(json.dumps(dict(s.resources)))), sort_keys=False))
    print(f"sweep: {len(runs)} runs in {sweep_dir / 'runs'}")
    if s.executor == "slurm":
        print(f"submit with: sbatch {sweep_dir / 'slurm.sh'}")
        return EXIT_OK
    if s.executor == "kubernetes":
        print(f"submit with: kubectl apply -f {sweep_dir / 'job.yaml'}  (set sweep.image; mount {sweep_dir} at the "
              f"same path)")
        return EXIT_OK
    todo = []
    for (r, c), cmd in zip(plans, commands):
        if sweeps.finished(c.workdir, c.train.steps, evaluated=bool(c.eval.tasks)):
            print(f"sweep: run {r.name} finished already (step {c.train.steps}), skipped")
        else:
            todo.append((r.name, cmd, sweep_dir / "runs" / r.name / "train.log"))
    codes = sweeps.run_local(todo, parallel=s.parallel, device_env=s.device_env, devices=list(s.devices))
    failed = {name: code for name, code in codes.items() if code != 0}
    for name, code in failed.items():
        print(f"sweep: run {name} exited {code}; its log: {sweep_dir / 'runs' / name / 'train.log'}")
    print(f"sweep: {len(codes) - len(failed)} runs done now, {len(runs) - len(todo)} before, {len(failed)} failed; "
          f"results: python -m monitor_jax.main report --sweep={sweep_dir}")
    if not failed:
        return EXIT_OK
    return EXIT_PREEMPTED if set(failed.values()) == {EXIT_PREEMPTED} else EXIT_USER_ERROR
