"""A run's orbax checkpoints: the manager, integrity seals, `--checkpoint` resolution, checked restores.

Layout: WORKDIR/checkpoints/STEP/{state, data, config, ...} as orbax writes it.

Seals. Orbax commits a step atomically, but a file damaged afterwards (a
truncated copy, a full disk during rsync) is reported by tensorstore without
the file's name. Once a step's save has completed, process 0 writes
`monitor_jax_files.json` into it: every file's size and CRC32. A restore first
compares sizes (cheap); if orbax still fails, the CRCs name the damaged file.
A step is sealed when the next save starts or the run ends, so only the newest
checkpoint of a killed run (kill -9) can be unsealed: it is checked by
restoring it.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import zlib
from pathlib import Path
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import AnyPreservationPolicy, BestN, LatestN

from monitor_jax.errors import CheckpointError, first_line
from monitor_jax.parallel.multihost import sync

log = logging.getLogger("monitor_jax.checkpoints")

SEAL = "monitor_jax_files.json"
JSON_FILES = ("_METADATA", "_CHECKPOINT_METADATA", "_sharding", "metadata")   # orbax's JSON files without .json
QUARANTINE = "checkpoints.corrupt"      # sibling of checkpoints/: skipped steps are moved here, never deleted


# ------------------------------------------------------------------ the manager
def manager(directory: str | Path, keep: int = 2, best_metric: str = "", best_mode: str = "max",
            read_only: bool = False) -> ocp.CheckpointManager:
    """Keeps the latest `keep` steps, plus the best by `best_metric` when set; saves asynchronously."""
    if read_only:
        return ocp.CheckpointManager(Path(directory), options=ocp.CheckpointManagerOptions(read_only=True))
    policies = [LatestN(keep)]
    best = {}
    if best_metric:
        policies.append(BestN(get_metric_fn=lambda m: m[best_metric], reverse=best_mode == "min", n=1))
        # best_fn also makes orbax write each step's metrics to disk: without them a resumed run's BestN
        # would not know the earlier steps' scores, and `--checkpoint=DIR:best` could not find the best.
        best = dict(best_fn=lambda m: m[best_metric], best_mode=best_mode)
    options = ocp.CheckpointManagerOptions(preservation_policy=AnyPreservationPolicy(policies),
                                           enable_async_checkpointing=True, **best)
    return ocp.CheckpointManager(Path(directory), options=options)


# ------------------------------------------------------------------ seals
def _files(step_dir: Path) -> list[Path]:
    return sorted(p for p in step_dir.rglob("*") if p.is_file() and p.name != SEAL)


def _crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            crc = zlib.crc32(chunk, crc)
    return crc


def seal(step_dir: str | Path) -> None:
    """Record every file's size and CRC32 in the step directory (process 0, after the save completed)."""
    step_dir = Path(step_dir)
    files = {str(p.relative_to(step_dir)): [p.stat().st_size, _crc32(p)] for p in _files(step_dir)}
    tmp = step_dir / (SEAL + ".tmp")
    tmp.write_text(json.dumps(files))
    tmp.rename(step_dir / SEAL)


def seal_completed(mngr: ocp.CheckpointManager, exclude: tuple[int, ...] = ()) -> None:
    """Seal every step the manager holds but `exclude` (steps whose async save may still run)."""
    if jax.process_index() != 0:
        return
    for step in mngr.all_steps():
        step_dir = Path(mngr.directory) / str(step)
        if step not in exclude and step_dir.is_dir() and not (step_dir / SEAL).exists():
            seal(step_dir)


def check_sizes(step_dir: Path) -> None:
    """A sealed step whose files are missing or changed in size is corrupt: name the file."""
    seal_file = step_dir / SEAL
    if not seal_file.exists():
        return
    try:
        files = json.loads(seal_file.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"checkpoint {step_dir} is corrupt: {SEAL} is not valid JSON ({e.msg})") from None
    for rel, (size, _) in files.items():
        path = step_dir / rel
        if not path.is_file():
            raise CheckpointError(f"checkpoint {step_dir} is corrupt: file {rel} is missing")
        if path.stat().st_size != size:
            raise CheckpointError(f"checkpoint {step_dir} is corrupt: file {rel} is {path.stat().st_size} bytes, "
                                  f"{size} when saved (truncated or overwritten)")


def _changed_file(step_dir: Path) -> str | None:
    """The first file whose CRC differs from the seal; unsealed: the first metadata file that is not JSON."""
    seal_file = step_dir / SEAL
    if seal_file.exists():
        for rel, (_, crc) in json.loads(seal_file.read_text()).items():
            if _crc32(step_dir / rel) != crc:
                return rel
        return None
    for path in _files(step_dir):
        if path.name in JSON_FILES or path.suffix == ".json":
            try:
                json.loads(path.read_bytes())
            except ValueError:
                return str(path.relative_to(step_dir))
    return None


def checked_restore(mngr: ocp.CheckpointManager, step: int, args: ocp.args.CheckpointArgs) -> Any:
    """`mngr.restore(step, args)`; a damaged checkpoint is a CheckpointError naming its directory and file."""
    step_dir = Path(mngr.directory) / str(step)
    check_sizes(step_dir)
    try:
        return mngr.restore(step, args=args)
    except Exception as e:   # orbax/tensorstore raise many types; all mean "this step did not restore"
        first = first_line(e)
        sealed = (step_dir / SEAL).exists()
        changed = _changed_file(step_dir)
        if changed:
            how = "changed since it was saved (CRC32 differs)" if sealed else "is not valid JSON"
            raise CheckpointError(f"checkpoint {step_dir} is corrupt: file {changed} {how}; orbax: {first}") from e
        sealed = "" if sealed else " (not sealed, so a damaged data file cannot be named)"
        raise CheckpointError(f"checkpoint {step_dir} could not be restored{sealed}: {type(e).__name__}: "
                              f"{first}") from e


def restore_newest_intact(mngr: ocp.CheckpointManager, make_args: Callable[[], ocp.args.CheckpointArgs],
                          workdir: str | Path) -> tuple[int | None, Any]:
    """Restore the newest step that restores; newer ones that fail are moved aside with a warning.

    A step is judged corrupt only when an older one restores with the same
    arguments: if none does, the failure is the run's (a changed model config,
    say), so the newest step's error is raised and nothing is moved.
    """
    steps = sorted(mngr.all_steps(), reverse=True)
    failures: list[tuple[int, CheckpointError]] = []
    for step in steps:
        try:
            restored = checked_restore(mngr, step, make_args())
        except CheckpointError as e:
            failures.append((step, e))
            continue
        if failures:
            _quarantine(mngr, failures, step, Path(workdir))
        return step, restored
    if failures:
        raise failures[0][1]
    return None, None


def _quarantine(mngr: ocp.CheckpointManager, failures, restored_step: int, workdir: Path) -> None:
    for step, error in failures:
        log.warning("skipped checkpoint step %d: %s. Resuming from step %d; the skipped step is moved to %s "
                    "(nothing is deleted)", step, error, restored_step, workdir / QUARANTINE / str(step))
    sync("checkpoint quarantine: all processes have read")
    if jax.process_index() == 0:
        (workdir / QUARANTINE).mkdir(parents=True, exist_ok=True)
        for step, _ in failures:
            target = workdir / QUARANTINE / str(step)
            n = 1
            while target.exists():
                target, n = workdir / QUARANTINE / f"{step}.{n}", n + 1
            shutil.move(str(Path(mngr.directory) / str(step)), str(target))
    sync("checkpoint quarantine: moved")
    mngr.reload()


# ------------------------------------------------------------------ --checkpoint=...
@dataclasses.dataclass(frozen=True)
class Reference:
    """What `--checkpoint` names: an orbax step (`directory`/`step`), a Hugging Face directory, or nothing."""
    kind: str                           # "orbax" | "hf" | "none" (no checkpoint yet: the base model)
    path: Path | None = None            # orbax: the checkpoints/ folder; hf: the directory
    step: int | None = None

    def describe(self) -> str:
        if self.kind == "orbax":
            return f"{self.path}/{self.step}"
        return str(self.path) if self.kind == "hf" else "base model (untrained)"


def _is_step_dir(path: Path) -> bool:
    return path.name.isdigit() and (path / "_CHECKPOINT_METADATA").exists()


def resolve(spec: str, workdir: str | Path, best_metric: str = "", best_mode: str = "max") -> Reference:
    """`--checkpoint=SPEC`: "" (the run's latest, else the base model), a run's work directory or its
    checkpoints/ folder (latest; `DIR:best` the best by `best_metric`), a step directory, or a Hugging Face
    directory."""
    which = "latest"
    if spec.endswith((":best", ":latest")):
        spec, which = spec.rsplit(":", 1)
    flag = f"--checkpoint={spec}" + (f":{which}" if which != "latest" else "")
    if not spec:
        folder = Path(workdir).resolve() / "checkpoints"
        if not (folder.is_dir() and manager(folder, read_only=True).all_steps()):
            if which == "latest":
                return Reference("none")
            raise CheckpointError(f"{flag}: the run {workdir} has no checkpoints yet")
    else:
        path = Path(spec).resolve()
        if not path.exists():
            raise CheckpointError(f"{flag}: {path} does not exist")
        if (path / "config.json").is_file() and any(path.glob("*.safetensors*")):
            if which != "latest":
                raise CheckpointError(f"{flag}: {path} is a Hugging Face directory; ':{which}' applies to a run's "
                                      f"checkpoints")
            return Reference("hf", path)
        if _is_step_dir(path):
            if which != "latest":
                raise CheckpointError(f"{flag}: {path} is one step; ':{which}' applies to a run's checkpoints")
            return Reference("orbax", path.parent, int(path.name))
        folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        if not any(_is_step_dir(p) for p in folder.iterdir()):
            raise CheckpointError(f"{flag}: {path} holds no checkpoint: give a run's work directory, its "
                                  f"checkpoints/ folder, a step directory (checkpoints/STEP) or a Hugging Face "
                                  f"directory (config.json)")
    mngr = manager(folder, read_only=True)
    steps = mngr.all_steps()
    if not steps:
        raise CheckpointError(f"{flag}: no checkpoints in {folder}")
    if which == "latest":
        return Reference("orbax", folder, max(steps))
    if not best_metric:
        raise CheckpointError(f"{flag}: ':best' needs train.best_metric (and train.best_mode), the metric the "
                              f"run's checkpoints were selected by")
    scored = {s: (mngr.metrics(s) or {}).get(best_metric) for s in steps}
    scored = {s: v for s, v in scored.items() if v is not None}
    if not scored:
        raise CheckpointError(f"{flag}: no checkpoint in {folder} records {best_metric!r} (steps {sorted(steps)})")
    pick = max if best_mode == "max" else min
    return Reference("orbax", folder, pick(scored, key=lambda s: (scored[s], s)))


def restore_params(ref: Reference, abstract_params: Any) -> Any:
    """Parameters only (orbax partial restore): the optimiser state is never read into memory. A LoRA run's
    parameters are its adapters (the base is not in its checkpoints)."""
    mngr = manager(ref.path, read_only=True)
    abstract = {"params": abstract_params}
    args = ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item=abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract), partial_restore=True))
    return checked_restore(mngr, ref.step, args)["state"]["params"]


def has_item(ref: Reference, name: str) -> bool:
    """Whether the step holds the item `name` (a LoRA run's checkpoints hold "base")."""
    return (Path(ref.path) / str(ref.step) / name).is_dir()


def restore_item(ref: Reference, name: str) -> Any:
    """One JSON item of a step (e.g. a LoRA checkpoint's "base": the base model's path and fingerprint)."""
    mngr = manager(ref.path, read_only=True)
    return checked_restore(mngr, ref.step, ocp.args.Composite(**{name: ocp.args.JsonRestore()}))[name]
