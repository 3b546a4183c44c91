"""Stage bookkeeping: each stage writes its outputs, then records the fingerprint of what it was computed from.

A stage is done when the record holds the fingerprint the current config and the upstream stages give it:
a rerun skips it; a changed setting (or a rerun upstream stage that produced something else) redoes it and
everything after it. A stage killed part-way has no record and runs again.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import jax

from monitor_jax.parallel.multihost import sync


def fingerprint(*parts: Any) -> str:
    """A stable hash of JSON-able parts (settings, upstream fingerprints, file digests)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


class Stages:
    """`directory/stages.json`: {stage: fingerprint} of the finished stages (written by process 0)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.path = self.directory / "stages.json"

    def _read(self) -> dict[str, str]:
        return json.loads(self.path.read_text()) if self.path.is_file() else {}

    def done(self, name: str, fp: str) -> bool:
        return self._read().get(name) == fp

    def recorded(self, name: str) -> str | None:
        return self._read().get(name)

    def _write(self, record: dict[str, str], what: str) -> None:
        if jax.process_index() == 0:
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
            os.replace(tmp, self.path)
        sync(what)

    def finish(self, name: str, fp: str) -> None:
        self._write({**self._read(), name: fp}, f"elicit stage {name} done")

    def forget(self, name: str) -> None:
        record = self._read()
        record.pop(name, None)
        self._write(record, f"elicit stage {name} forgotten")
