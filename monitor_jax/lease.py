"""One writer per directory: a lease file with a heartbeat, held by `train`, `sweep`, `elicit` and `export`.

Two processes writing one work directory interleave checkpoints (one removes the other's temporary step
directory) and log every step twice into metrics.jsonl. So each command first takes DIR/.lease, a small JSON
record of its holder (host, boot id, pid namespace, process id and its start tick, the command, a random
token, the start time, the heartbeat interval and stale timeout it promises, and a heartbeat: a wall-clock time
and a counter the holder rewrites every HEARTBEAT_S). A second run finds the lease held by a live process and
stops with a `DirectoryInUse` error naming the holder (the CLI's one `error:` line, exit 2) before it writes
anything. The lease is removed on every normal exit (finished, paused, preempted with exit 75, a user error); on
kill -9 or a lost host it stays and goes stale.

Stale, taken over at once, and said so in one warning naming the old holder and the reason:
  - the holder's host is this host (same host name, boot id and pid namespace) and its process is gone (no
    such pid, a zombie, or a pid reused by a process that started at another tick);
  - the heartbeat written in the file is older than the holder's stale timeout plus SKEW_S, by this host's clock.
Stale after watching: a lease of another host whose heartbeat is younger than that is watched (re-read every
second or so); if its content does not change for the holder's stale timeout, measured on this process's
monotonic clock, it is stale; if it changes, the holder is alive and this run stops. A requeued job whose
predecessor died a moment ago on another host therefore waits up to STALE_S, then takes over, instead of failing.

Takeover: the taker creates DIR/.lease.TOKEN.N.takeover with O_CREAT|O_EXCL (TOKEN names the stale lease; N
counts claims whose taker itself died), checks that the lease still holds exactly the content it judged stale,
writes its own record to a temporary file, renames it over DIR/.lease, and re-reads it to confirm its token. Of
several simultaneous takers only the one that created the claim proceeds; the others re-read and find the new,
live holder. The claim stays while the new holder lives (a slow taker that read the old lease long ago finds
the claim taken), and is removed at release. The holder re-reads the lease before each heartbeat: if it was
taken over (a holder misjudged dead: a paused VM, a filesystem that stalled its writes for longer than the
stale timeout) it prints one `error:` line and exits at once with 2, so two writers overlap at most one
heartbeat interval.

What the filesystem must provide (local disks, NFSv3/v4, gcsfuse; flock/POSIX locks are not used: they are
missing or unreliable on NFS and gcsfuse):
  - O_CREAT|O_EXCL creates a file only if it does not exist, atomically across hosts: NFSv3/v4 exclusive create;
    gcsfuse creates the object with a does-not-exist precondition (at close for new files since gcsfuse 1.2, so
    a failed close counts as a lost race, and the create is confirmed by re-reading);
  - rename over an existing file replaces it atomically for readers (POSIX; an NFS RENAME; on gcsfuse a copy
    then a delete, where readers see the old or the new object, never a mix);
  - a file closed on one host is read whole and current by an open() on another (close-to-open consistency: NFS
    by default; gcsfuse only with its metadata cache short or off: mount the work directory with
    `--metadata-cache-ttl-secs=0` (or `metadata-cache:ttl-secs` at most a few seconds), as gcsfuse's own docs
    ask for buckets written from several hosts; a cache TTL longer than STALE_S - HEARTBEAT_S can make a live
    holder look stale to another host).
  File modification times are not used: the timestamps are written in the file by the holder.

Timeouts (seconds; environment variables, read when a lease is taken, so tests and clusters can change them):
  MONITOR_JAX_LEASE_HEARTBEAT_S = 10   the holder rewrites its lease this often
  MONITOR_JAX_LEASE_STALE_S     = 90   no heartbeat this long: the holder is dead (above gcsfuse's default
                                       60 s metadata cache plus one heartbeat)
  MONITOR_JAX_LEASE_SKEW_S      = 30   how far hosts' clocks may disagree: a heartbeat is judged old by the
                                       reader's clock only past stale + skew; past that, a holder whose clock
                                       runs behind could be taken over while alive (it then exits, see above)
The holder writes its own interval and stale timeout into the lease, and readers use those, so runs started with
other values still agree. The setting is per cluster, not per experiment, so it is not a config key.

Multi-host jobs are one writer: process 0 takes (or fails to take) the lease and `hold` broadcasts the outcome
(parallel.multihost.share_text), so every process continues, or every process raises the same error and exits
2; only process 0 heartbeats. At a normal exit all processes pass a barrier before process 0 releases.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shlex
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

from monitor_jax.errors import EXIT_USER_ERROR, MonitorError, first_line

log = logging.getLogger("monitor_jax.lease")

FILE = ".lease"


def _seconds(name: str, default: float) -> float:
    value = os.environ.get(name, "")
    try:
        out = float(value) if value else default
    except ValueError:
        raise MonitorError(f"{name}={value!r} is not a number of seconds") from None
    if not out > 0:
        raise MonitorError(f"{name}={value!r} must be a positive number of seconds")
    return out


def heartbeat_s() -> float:
    return _seconds("MONITOR_JAX_LEASE_HEARTBEAT_S", 10.0)


def stale_s() -> float:
    return _seconds("MONITOR_JAX_LEASE_STALE_S", 90.0)


def skew_s() -> float:
    return _seconds("MONITOR_JAX_LEASE_SKEW_S", 30.0)


class DirectoryInUse(MonitorError):
    """Another live process holds the directory's lease; the message names it."""


# ------------------------------------------------------------------ who and when
def _read_text(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def _machine() -> dict[str, str]:
    """This host as a lease records it: a pid means something only under the same boot and pid namespace."""
    try:
        pidns = os.readlink("/proc/self/ns/pid")
    except OSError:
        pidns = ""
    return dict(host=socket.gethostname(), boot_id=_read_text("/proc/sys/kernel/random/boot_id"), pidns=pidns)


def _process_start(pid: int) -> str | None:
    """The process's start tick (/proc/PID/stat field 22): "" where /proc is missing, None when it is not
    running (no such pid, or a zombie: killed, not yet reaped)."""
    if not os.path.isdir("/proc/self"):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return ""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def _clock(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _command() -> str:
    """This process's command line, as the user typed it (`python -m monitor_jax.main ...`)."""
    argv = list(sys.argv) or ["?"]
    if argv[0].endswith(os.path.join("monitor_jax", "main.py")):
        argv[:1] = ["python", "-m", "monitor_jax.main"]
    return shlex.join(argv)[:1000]


def _record(what: str, command: str) -> dict[str, Any]:
    now, beat, stale = time.time(), heartbeat_s(), stale_s()
    if stale < 2 * beat:
        raise MonitorError(f"MONITOR_JAX_LEASE_STALE_S={stale:g} must be at least twice MONITOR_JAX_LEASE_HEARTBEAT_S="
                           f"{beat:g}: a live holder must renew its lease well within the stale timeout")
    return dict(**_machine(), pid=os.getpid(), pid_start=_process_start(os.getpid()) or "", what=what,
                command=command, start=_clock(now), token=uuid.uuid4().hex, heartbeat=now, beat=0,
                heartbeat_s=beat, stale_s=stale, claim="")


def describe(rec: dict[str, Any]) -> str:
    """The holder, for messages: host, process id, start time, command."""
    what = f"a {rec.get('what')} run" if rec.get("what") else "a run"
    return (f"{what} on host {rec.get('host')}, process id {rec.get('pid')}, started {rec.get('start')} "
            f"(command: {rec.get('command') or '?'})")


# ------------------------------------------------------------------ the file
def _read(path: Path) -> bytes | None:
    """The lease's bytes; None when there is none."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _parse(raw: bytes | None) -> dict[str, Any] | None:
    """The record; None when absent, being written (an exclusive create is not atomic with its write) or damaged."""
    try:
        rec = json.loads(raw) if raw else None
    except ValueError:
        return None
    return rec if isinstance(rec, dict) and isinstance(rec.get("token"), str) else None


def _create(path: Path, data: bytes) -> bool:
    """Create `path` holding `data` only if it does not exist (O_EXCL); False if it does."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except OSError:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    try:
        os.close(fd)
    except OSError:   # gcsfuse uploads a new file at close, with a does-not-exist precondition: someone else won
        return False
    return True


def _replace(path: Path, rec: dict[str, Any]) -> None:
    """Write `rec` to a temporary file and rename it over `path`: readers see the old or the new record whole."""
    tmp = path.with_name(f"{FILE}.{rec['token']}.tmp")
    tmp.write_text(json.dumps(rec))
    os.replace(tmp, path)


def _same_machine(rec: dict[str, Any], me: dict[str, str]) -> bool:
    return rec.get("host") == me["host"] and rec.get("boot_id", "") == me["boot_id"] and \
        rec.get("pidns", "") == me["pidns"]


def _alive(rec: dict[str, Any]) -> bool:
    start = _process_start(int(rec.get("pid", -1)))
    return start is not None and (not start or not rec.get("pid_start") or start == rec["pid_start"])


def _judge(rec: dict[str, Any] | None, me: dict[str, str], now: float) -> tuple[str, str]:
    """("live" | "stale" | "watch", why) for a lease record read now."""
    if rec is None:
        return "watch", "its lease file is being written or is damaged"
    if _same_machine(rec, me):
        if _alive(rec):
            return "live", f"its process {rec.get('pid')} is running on this host"
        return "stale", f"its process {rec.get('pid')} is no longer running on host {me['host']}"
    age, limit = now - float(rec.get("heartbeat", 0)), float(rec.get("stale_s", stale_s()))
    if age > limit + skew_s():
        return "stale", (f"its last heartbeat is {age:.0f} s old by this host's clock (stale after {limit:g} s, "
                         f"plus {skew_s():g} s for clock differences between hosts)")
    return "watch", f"its last heartbeat is {max(age, 0):.0f} s old"


def _in_use(path: Path, rec: dict[str, Any], why: str, flag: str) -> DirectoryInUse:
    elsewhere = f"another directory ({flag}=...)" if flag else "another directory"
    return DirectoryInUse(
        f"{path.parent} is in use by {describe(rec)}: {why}. Two runs writing one directory would interleave "
        f"checkpoints and metrics. Wait for it to end or stop it, or use {elsewhere}. If that process is gone, its "
        f"lease {path} is taken over at once on its own host, and from any other host "
        f"{float(rec.get('stale_s', stale_s())):g} s after its last heartbeat")


# ------------------------------------------------------------------ the lease
class Lease:
    """A held lease: a daemon thread rewrites its heartbeat until `release`."""

    def __init__(self, path: Path, rec: dict[str, Any]):
        self.path, self.record = path, rec
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease {path}", daemon=True)
        self._thread.start()

    @property
    def token(self) -> str:
        return self.record["token"]

    def _beat(self) -> None:
        failing = False
        while not self._stop.wait(self.record["heartbeat_s"]):
            try:
                raw = _read(self.path)
                current = _parse(raw)
                if raw is None or (current is not None and current["token"] != self.token):
                    self._lost(current)
                if current is None:
                    continue   # written this instant by a taker (not atomic on some filesystems): next beat
                self.record.update(heartbeat=time.time(), beat=self.record["beat"] + 1)
                _replace(self.path, self.record)
                failing = False
            except OSError as e:     # a filesystem hiccup: keep beating; a lease left stale is taken over
                if not failing:
                    log.warning("could not renew %s (%s); retrying every %g s", self.path, first_line(e),
                                self.record["heartbeat_s"])
                failing = True

    def _lost(self, current: dict[str, Any] | None) -> None:
        """Another process took the lease over (it judged this one dead) or it was deleted: stop writing now."""
        if self._stop.is_set():
            return
        how = "it was deleted" if current is None else f"it was taken over by {describe(current)}"
        print(f"error: lost the lease {self.path}: {how}. Stopped at once so that two runs do not write "
              f"{self.path.parent} together", file=sys.stderr, flush=True)
        os._exit(EXIT_USER_ERROR)

    def release(self) -> None:
        """Stop the heartbeat and remove the lease (if it is still this one's) and its takeover claim."""
        self._stop.set()
        self._thread.join()
        try:
            current = _parse(_read(self.path))
            if current is not None and current["token"] == self.token:
                self.path.unlink()
            else:
                log.warning("%s is no longer this process's at release (%s); left as it is", self.path,
                            describe(current) if current else "deleted")
            if self.record.get("claim"):
                (self.path.parent / self.record["claim"]).unlink(missing_ok=True)
            self.path.with_name(f"{FILE}.{self.token}.tmp").unlink(missing_ok=True)
        except OSError as e:
            log.warning("could not remove %s (%s); the next run takes it over when it is stale", self.path,
                        first_line(e))


def _claim_live(claim: Path, me: dict[str, str]) -> bool:
    """A takeover claim whose taker may still finish (a claim is never renewed: a taker needs milliseconds)."""
    rec = _parse(_read(claim))
    if rec is None:    # being written, or its taker died between create and write
        try:
            return time.time() - claim.stat().st_mtime < stale_s()
        except FileNotFoundError:
            return False
    if _same_machine(rec, me):
        return _alive(rec)
    return time.time() - float(rec.get("heartbeat", 0)) < float(rec.get("stale_s", stale_s())) + skew_s()


def _take_over(path: Path, raw: bytes, old: dict[str, Any] | None, why: str, what: str, command: str,
               me: dict[str, str]) -> Lease | None:
    """Replace the stale lease `raw` by this process's, if this process wins the claim on it; None if not."""
    rec = _record(what, command)
    key = old["token"] if old else "x" + hashlib.sha1(raw).hexdigest()[:16]
    n = 0
    while True:
        claim = path.with_name(f"{FILE}.{key}.{n}.takeover")
        if _create(claim, json.dumps(rec).encode()):
            break
        if not claim.exists():
            continue              # its taker gave up this instant: the same claim again
        if _claim_live(claim, me):
            return None           # another process is taking it over
        n += 1                    # its taker died mid-takeover: the next claim
    rec["claim"] = claim.name
    try:
        if _read(path) != raw:    # renewed, released or replaced since it was judged: judge again
            claim.unlink(missing_ok=True)
            return None
        _replace(path, rec)
        if (_parse(_read(path)) or {}).get("token") != rec["token"]:
            claim.unlink(missing_ok=True)
            return None
    except BaseException:
        claim.unlink(missing_ok=True)
        raise
    for dead in [old.get("claim") if old else ""] + [f"{FILE}.{key}.{i}.takeover" for i in range(n)]:
        if dead:     # the dead holder's own claim; claims on this lease whose takers died
            (path.parent / dead).unlink(missing_ok=True)
    log.warning("took over %s from %s: %s", path, describe(old) if old else "an unreadable lease", why)
    return Lease(path, rec)


def acquire(directory: str | Path, what: str = "", flag: str = "", command: str | None = None) -> Lease:
    """Take DIR/.lease (creating DIR), or raise DirectoryInUse naming its live holder; a stale one is taken over.

    `what` names the command in messages, `flag` the option that chooses another directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / FILE
    command = _command() if command is None else command
    me = _machine()
    watched: tuple[bytes, float] | None = None     # (content, since when on the monotonic clock)
    while True:
        rec = _record(what, command)
        if _create(path, json.dumps(rec).encode()):
            if (_parse(_read(path)) or {}).get("token") == rec["token"]:
                return Lease(path, rec)
            continue
        raw = _read(path)
        if raw is None:
            watched = None
            continue               # released in between
        holder = _parse(raw)
        if watched is not None and watched[0] != raw:
            before = _parse(watched[0])
            if holder is not None and before is not None and holder["token"] == before["token"]:
                raise _in_use(path, holder, "its heartbeat advanced while this process watched it", flag)
            watched = None         # another holder now, or its record was completed: judge it afresh
        verdict, why = _judge(holder, me, time.time())
        if verdict == "live":
            raise _in_use(path, holder, why, flag)
        if verdict == "watch":
            limit = float(holder.get("stale_s", stale_s())) if holder else stale_s()
            if watched is None:
                watched = (raw, time.monotonic())
                if holder is not None:
                    log.info("%s is held by %s on another host (%s); watching its heartbeat for up to %g s",
                             path, describe(holder), why, limit)
            waited = time.monotonic() - watched[1]
            if waited < limit:
                beat = float(holder.get("heartbeat_s", heartbeat_s())) if holder else 1.0
                time.sleep(min(1.0, max(0.05, beat / 4)))
                continue
            why = f"{why}; its content did not change while this process watched it for {waited:.0f} s"
        lease = _take_over(path, raw, holder, why, what, command, me)
        if lease is not None:
            return lease
        watched = None
        time.sleep(0.1)            # another process won the claim: its lease is read next


# ------------------------------------------------------------------ one writer per job
def _processes() -> tuple[int, int]:
    """(this process's index, the job's process count), without starting jax's backend where jax is unused."""
    jax = sys.modules.get("jax")
    if jax is None or not jax.distributed.is_initialized():
        return 0, 1
    return jax.process_index(), jax.process_count()


@contextlib.contextmanager
def hold(directory: str | Path, what: str = "", flag: str = "") -> Iterator[Lease | None]:
    """Hold DIR's lease for the block: process 0 takes it for the whole job and every process learns the
    outcome, so either all continue or all raise the same DirectoryInUse. Yields the lease on process 0."""
    index, count = _processes()
    lease, error = None, ""
    if index == 0:
        try:
            lease = acquire(directory, what, flag)
        except DirectoryInUse as e:
            error = str(e)
        except Exception as e:
            if count > 1:
                from monitor_jax.parallel.multihost import share_text

                share_text(f"process 0 could not take the lease in {directory}: {first_line(e)}")
            raise
    if count > 1:
        from monitor_jax.parallel.multihost import share_text

        error = share_text(error)
    if error:
        raise DirectoryInUse(error)
    completed = False
    try:
        yield lease
        completed = True
    finally:
        if completed and count > 1:    # the others' last writes are done before the directory is free
            from monitor_jax.parallel.multihost import sync

            sync(f"lease {directory}")
        if lease is not None:
            lease.release()
