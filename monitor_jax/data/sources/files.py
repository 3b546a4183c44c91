"""JSONL and Parquet files: one file, a glob pattern, or a list of either, read row by row.

Sources keep only paths, offsets and counts, and open files when a row is read, so they pickle cheaply into
grain worker processes.
"""
from __future__ import annotations

import bisect
import glob
import json
import os
from typing import Any, Mapping, Sequence

import numpy as np

from monitor_jax.data.sources.base import StoredSource
from monitor_jax.errors import DataError

PathOrPaths = str | os.PathLike | Sequence[str | os.PathLike]


def _expand_paths(path: PathOrPaths) -> list[str]:
    """Files named by a path, a glob pattern, or a list of either, in the given (glob: sorted) order."""
    patterns = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not patterns:
        raise DataError("no data files given")
    paths = []
    for pattern in map(os.fspath, patterns):
        if glob.has_magic(pattern):
            matches = sorted(glob.glob(pattern))
            if not matches:
                raise DataError(f"no files match {pattern!r}")
            paths.extend(matches)
        elif not os.path.isfile(pattern):
            raise DataError(f"no such data file: {pattern!r}")
        else:
            paths.append(pattern)
    return paths


class FileSource(StoredSource):
    """Rows of the files `path` names, stored in chunks (a file's lines, a Parquet row group); named by the
    paths."""

    def __init__(self, path: PathOrPaths, fields: Mapping[str, str] | None = None, required: Sequence[str] = ()):
        super().__init__(fields, required)
        self.paths = _expand_paths(path)
        self._starts = [0]   # the first row of each chunk, then the number of rows

    @property
    def name(self) -> str:
        return ", ".join(self.paths)

    def _count(self, rows_per_chunk: Sequence[int]) -> None:
        self._starts = np.cumsum([0, *rows_per_chunk]).tolist()
        if self._starts[-1] == 0:
            raise DataError(f"no rows in {self.paths}")

    def __len__(self) -> int:
        return self._starts[-1]

    def _locate(self, i: int) -> tuple[int, int]:
        """(chunk index, row within that chunk) of row i."""
        chunk = bisect.bisect_right(self._starts, i) - 1
        return chunk, i - self._starts[chunk]


class _NonJsonConstant(ValueError):
    pass


def _reject_constant(name: str):
    # Python's json reads NaN and Infinity, which JSON does not have; they would reach scores and outputs.
    raise _NonJsonConstant(name)


class JsonlSource(FileSource):
    """Rows of one or several JSONL files (paths or glob patterns), in file order.

    Line offsets are indexed once at construction; a row is read and parsed when
    asked for. A blank line is an error (never skipped); a final newline is fine.
    """

    def __init__(self, path: PathOrPaths, fields: Mapping[str, str] | None = None,
                 required: Sequence[str] = ()):
        super().__init__(path, fields, required)
        # Per file: byte offset of each line start, plus the file size, so line j is
        # bytes [offsets[j], offsets[j + 1]). Since blank lines are errors, row j is line j + 1.
        self._offsets = [self._index(path) for path in self.paths]
        self._count([len(o) - 1 for o in self._offsets])   # a chunk per file

    @staticmethod
    def _index(path: str) -> np.ndarray:
        offsets, position = [], 0
        with open(path, "rb") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    raise DataError(f"{path} line {number}: blank line; remove it (blank lines are not rows)")
                offsets.append(position)
                position += len(line)
        offsets.append(position)
        return np.asarray(offsets, dtype=np.int64)

    def describe(self, i: int) -> str:
        file, j = self._locate(i)
        return f"{self.paths[file]} line {j + 1}"

    def _read(self, i: int) -> dict[str, Any]:
        file, j = self._locate(i)
        start, end = self._offsets[file][j:j + 2]
        # A fresh handle per read: safe under grain's reader threads and after pickling.
        with open(self.paths[file], "rb") as f:
            f.seek(start)
            line = f.read(end - start)
        try:
            row = json.loads(line.rstrip(b"\r\n"), parse_constant=_reject_constant)
        except json.JSONDecodeError as e:
            raise DataError(f"{self.describe(i)}: invalid JSON: {e.msg} at column {e.colno}") from e
        except _NonJsonConstant as e:
            raise DataError(f"{self.describe(i)}: invalid JSON: {e} is not a JSON value (use null or a "
                            f"number)") from None
        except UnicodeDecodeError as e:
            raise DataError(f"{self.describe(i)}: not valid UTF-8: {e}") from e
        if not isinstance(row, dict):
            raise DataError(f"{self.describe(i)}: expected a JSON object, got {type(row).__name__}: "
                            f"{line[:80]!r}")
        return row


class ParquetSource(FileSource):
    """Rows of one or several Parquet files (e.g. written by Hugging Face `Dataset.to_parquet`).

    Construction reads metadata only. A row read loads its whole row group, which is
    cached until a row of another group is asked for: sequential reads are cheap,
    globally shuffled reads of a large file are not (convert it to TFDS instead).
    List-of-struct columns (chat `messages`) come back as lists of dicts.
    """

    def __init__(self, path: PathOrPaths, fields: Mapping[str, str] | None = None,
                 required: Sequence[str] = ()):
        import pyarrow.parquet as pq

        super().__init__(path, fields, required)
        # One entry per row group over all files: (file index, group index, first row in the file).
        self._groups: list[tuple[int, int, int]] = []
        group_rows = []
        for file, path in enumerate(self.paths):
            try:
                metadata = pq.read_metadata(path)
            except Exception as e:  # pyarrow raises several types for a non-Parquet file
                raise DataError(f"{path}: not a readable Parquet file: {e}") from e
            first = 0
            for group in range(metadata.num_row_groups):
                rows = metadata.row_group(group).num_rows
                if rows:
                    self._groups.append((file, group, first))
                    group_rows.append(rows)
                first += rows
        self._count(group_rows)   # a chunk per row group
        self._cache = None

    def describe(self, i: int) -> str:
        g, j = self._locate(i)
        file, _, first = self._groups[g]
        return f"{self.paths[file]} row {first + j} (0-based)"

    def _read(self, i: int) -> dict[str, Any]:
        import pyarrow.parquet as pq

        g, j = self._locate(i)
        cache = self._cache  # one read of the attribute: another thread may replace it
        if cache is None or cache[0] != g:
            file, group, _ = self._groups[g]
            cache = (g, pq.ParquetFile(self.paths[file]).read_row_group(group))
            self._cache = cache
        return cache[1].slice(j, 1).to_pylist()[0]

    def __getstate__(self):
        # The cached row group is bulky and rebuilt on demand.
        return {**self.__dict__, "_cache": None}
