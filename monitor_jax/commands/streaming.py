"""Per-row JSONL output for the streaming commands (score, generate)."""
from __future__ import annotations

import json
import os

import jax


class RowWriter:
    """Rows written as they complete to OUTPUT.partial (process 0 only); `finish` renames it to OUTPUT once
    every input row has its output row, so a crashed or short run never looks like a finished file."""

    def __init__(self, output_path: str):
        self.output_path, self.partial = output_path, f"{output_path}.partial"
        self.file = open(self.partial, "w") if jax.process_index() == 0 else None
        self.rows = 0

    def write(self, row: dict) -> None:
        self.rows += 1
        if self.file is not None:
            self.file.write(json.dumps(row, allow_nan=False) + "\n")
            self.file.flush()

    def finish(self, expected: int, what: str) -> None:
        self.close()
        if self.rows != expected:   # a command that lost a row must never look like success
            raise RuntimeError(f"{what}: {self.rows} of {expected} rows written")
        if jax.process_index() == 0:
            os.replace(self.partial, self.output_path)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def __enter__(self) -> "RowWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
