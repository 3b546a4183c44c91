"""Row sources: JSONL, Parquet and TFDS readers with random access.

Every source is a grain random-access data source (`len(source)`, `source[i]`)
whose rows are dicts of plain Python values (str, int, float, bool, and lists of
dicts for chat messages), plus `source.describe(i)`, where row i comes from
("data/train.jsonl line 17"), which downstream code puts in its error messages.

Sources keep only paths, offsets and counts, and open files when a row is read,
so they pickle cheaply into grain worker processes.

Every source takes `fields={our_name: name_in_file}` to rename fields (fields
not mentioned pass through unchanged) and `required=(our_name, ...)`: a row
without one of them, or with it null, is a `DataError` naming the field, the
fields the row has, and where the row is. Nothing is skipped silently: rows
leave a source only through `FilteredSource`, which counts and logs them.
"""
from __future__ import annotations

import bisect
import glob
import inspect
import json
import logging
import os
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from monitor_jax.errors import DataError  # noqa: F401  (re-exported for callers)

logger = logging.getLogger("monitor_jax.data")

PathOrPaths = str | os.PathLike | Sequence[str | os.PathLike]


def _expand_paths(path_or_paths: PathOrPaths) -> list[str]:
    """Files named by a path, a glob pattern, or a list of either, in the given (glob: sorted) order."""
    patterns = [path_or_paths] if isinstance(path_or_paths, (str, os.PathLike)) else list(path_or_paths)
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


class _Source:
    """Field renaming, required fields and validation shared by every source."""

    def __init__(self, fields: Mapping[str, str] | None, required: Sequence[str]):
        self.fields = dict(fields or {})
        self.required = tuple(required)
        self._renamed = set(self.fields.values())

    def __len__(self) -> int:
        raise NotImplementedError

    def _read(self, i: int) -> dict[str, Any]:
        """Row i as stored, before renaming."""
        raise NotImplementedError

    def describe(self, i: int) -> str:
        """Where row i comes from, for error messages."""
        raise NotImplementedError

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = int(i)
        # IndexError (not a wrapped error) ends plain `for row in source` iteration.
        if not 0 <= i < len(self):
            raise IndexError(f"row {i} out of range for a source of {len(self)} rows")
        return self._finish(self._read(i), i)

    def _finish(self, stored: dict[str, Any], i: int) -> dict[str, Any]:
        row = {k: v for k, v in stored.items() if k not in self._renamed}
        for ours, theirs in self.fields.items():
            if theirs in stored:
                if ours in row:
                    raise DataError(f"{self.describe(i)}: field {theirs!r} is renamed to {ours!r}, but the row "
                                    f"already has a field {ours!r}; rename one of them in `fields`")
                row[ours] = stored[theirs]
        for name in self.required:
            if row.get(name) is None:
                stored_as = f" (read from {self.fields[name]!r})" if self.fields.get(name, name) != name else ""
                state = "is null" if name in row else "is missing"
                raise DataError(f"{self.describe(i)}: required field {name!r}{stored_as} {state}; "
                                f"fields present: {sorted(stored)}")
        return row

    def validate(self) -> None:
        """Read every row; raises the first error (malformed row, missing field)."""
        for i in range(len(self)):
            self[i]


class _NonJsonConstant(ValueError):
    pass


def _reject_constant(name: str):
    # Python's json reads NaN and Infinity, which JSON does not have; they would reach scores and outputs.
    raise _NonJsonConstant(name)


class JsonlSource(_Source):
    """Rows of one or several JSONL files (paths or glob patterns), in file order.

    Line offsets are indexed once at construction; a row is read and parsed when
    asked for. A blank line is an error (never skipped); a final newline is fine.
    """

    def __init__(self, path: PathOrPaths, fields: Mapping[str, str] | None = None,
                 required: Sequence[str] = ()):
        super().__init__(fields, required)
        self.paths = _expand_paths(path)
        # Per file: byte offset of each line start, plus the file size, so line j is
        # bytes [offsets[j], offsets[j + 1]). Since blank lines are errors, row j is line j + 1.
        self._offsets = [self._index(path) for path in self.paths]
        self._starts = np.cumsum([0] + [len(o) - 1 for o in self._offsets]).tolist()
        if self._starts[-1] == 0:
            raise DataError(f"no rows in {self.paths}")

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

    def __len__(self) -> int:
        return self._starts[-1]

    def _locate(self, i: int) -> tuple[int, int]:
        """(file index, line index within that file) of row i."""
        file = bisect.bisect_right(self._starts, i) - 1
        return file, i - self._starts[file]

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


class ParquetSource(_Source):
    """Rows of one or several Parquet files (e.g. written by Hugging Face `Dataset.to_parquet`).

    Construction reads metadata only. A row read loads its whole row group, which is
    cached until a row of another group is asked for: sequential reads are cheap,
    globally shuffled reads of a large file are not (convert it to TFDS instead).
    List-of-struct columns (chat `messages`) come back as lists of dicts.
    """

    def __init__(self, path: PathOrPaths, fields: Mapping[str, str] | None = None,
                 required: Sequence[str] = ()):
        import pyarrow.parquet as pq

        super().__init__(fields, required)
        self.paths = _expand_paths(path)
        # One entry per row group over all files: (file index, group index, first row in the file).
        self._groups: list[tuple[int, int, int]] = []
        group_starts = [0]
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
                    group_starts.append(group_starts[-1] + rows)
                first += rows
        self._group_starts = group_starts
        if len(self) == 0:
            raise DataError(f"no rows in {self.paths}")
        self._cache = None

    def __len__(self) -> int:
        return self._group_starts[-1]

    def _locate(self, i: int) -> tuple[int, int]:
        """(row group entry, row within that group) of row i."""
        g = bisect.bisect_right(self._group_starts, i) - 1
        return g, i - self._group_starts[g]

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


class TfdsSource(_Source):
    """Rows of a prepared TFDS dataset split, read by `tfds.data_source` (array_record or parquet).

    Never downloads or prepares: a dataset that is not already in `data_dir` is an error.
    Text features come back as str, numeric scalars as Python scalars, and sequences of
    dicts (chat messages) as lists of dicts.
    """

    def __init__(self, name: str, split: str, data_dir: str | os.PathLike | None = None,
                 fields: Mapping[str, str] | None = None, required: Sequence[str] = ()):
        import tensorflow_datasets as tfds

        super().__init__(fields, required)
        self.name, self.split = name, split
        self.data_dir = None if data_dir is None else os.fspath(data_dir)
        where = f"TFDS dataset {name!r} split {split!r} (data_dir={self.data_dir})"
        try:
            # download=False: a missing dataset must be an error, not a network download.
            self._source = tfds.data_source(name, split=split, data_dir=self.data_dir, download=False)
        except tfds.core.registered.DatasetNotFoundError as e:
            # TFDS's own message lists every catalog dataset; say what to do instead.
            raise DataError(f"{where}: not found. Build local JSONL data into that data_dir with "
                            f"`python -m monitor_jax.data.tfds_jsonl`, or prepare a TFDS dataset there "
                            f"with file_format='array_record'") from e
        except Exception as e:  # TFDS raises ValueError, AssertionError, NotImplementedError, ...
            raise DataError(f"{where}: cannot open: {e}") from e
        self._features = self._source.dataset_info.features

    def __len__(self) -> int:
        return len(self._source)

    def describe(self, i: int) -> str:
        return f"TFDS {self.name} split {self.split!r} (data_dir={self.data_dir}) row {i}"

    def _read(self, i: int) -> dict[str, Any]:
        return _to_python(self._features, self._source[i])


def _to_python(feature, value):
    """A decoded TFDS value as plain Python values, following the feature's structure."""
    import tensorflow_datasets as tfds

    if isinstance(feature, tfds.features.FeaturesDict):
        return {k: _to_python(feature[k], v) for k, v in value.items()}
    if isinstance(feature, tfds.features.Sequence):
        inner = feature.feature
        if isinstance(inner, tfds.features.FeaturesDict):
            # TFDS stores a sequence of dicts as a dict of sequences; chat messages need a list of dicts.
            length = len(next(iter(value.values()))) if value else 0
            return [{k: _to_python(inner[k], v[n]) for k, v in value.items()} for n in range(length)]
        return [_to_python(inner, v) for v in value]
    if isinstance(feature, tfds.features.Text):
        return value.decode("utf-8")
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    return value


class FilteredSource:
    """The rows of `source` for which `predicate(row)` is true, chosen once at construction.

    The counts are logged and available from `report()`; a filter that drops every
    row is an error. The predicate is not kept, so the filtered source pickles
    even when the predicate is a lambda.
    """

    def __init__(self, source, predicate: Callable[[dict[str, Any]], bool], name: str):
        self.source, self.name = source, name
        kept = []
        for i in range(len(source)):
            row = source[i]
            try:
                keep = predicate(row)
            except Exception as e:
                raise DataError(f"filter {name!r} failed on {source.describe(i)}: {e!r}") from e
            if keep:
                kept.append(i)
        self._kept = np.asarray(kept, dtype=np.int64)
        self.dropped = len(source) - len(kept)
        logger.info("filter %r kept %d rows and dropped %d of %d", name, len(kept), self.dropped, len(source))
        if not kept:
            raise DataError(f"filter {name!r} dropped all {len(source)} rows")

    def __len__(self) -> int:
        return len(self._kept)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.source[self._kept[i]]

    def describe(self, i: int) -> str:
        return self.source.describe(self._kept[i])

    def report(self) -> dict[str, Any]:
        """{name, kept, dropped}: how many rows the filter kept and dropped."""
        return dict(name=self.name, kept=len(self), dropped=self.dropped)


class SubsetSource:
    """`n` rows of a source chosen by a seeded permutation, kept in the source's order; a source with fewer
    than `n` rows is an error (never a smaller set)."""

    def __init__(self, source, n: int, seed: int = 0):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise DataError(f"n={n!r} must be a positive integer (the rows to take from {source_name(source)})")
        if n > len(source):
            raise DataError(f"{source_name(source)} has {len(source)} rows; n={n} asks for more")
        self.source, self.name = source, f"{source_name(source)} ({n} rows, seed {seed})"
        self._kept = np.sort(np.random.default_rng(seed).permutation(len(source))[:n])

    def __len__(self) -> int:
        return len(self._kept)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.source[int(self._kept[i])]

    def describe(self, i: int) -> str:
        return self.source.describe(int(self._kept[i]))


def source_name(source) -> str:
    """A source's name for messages: its name, else its files."""
    return getattr(source, "name", None) or ", ".join(getattr(source, "paths", [])) or type(source).__name__


SOURCE_KINDS = {"jsonl": JsonlSource, "parquet": ParquetSource, "tfds": TfdsSource}


def describe(source, i: int) -> str:
    """Where row i of any source comes from ("data.jsonl line 3"), for error messages."""
    return source.describe(i) if hasattr(source, "describe") else f"row {i}"


def open_source(spec: Mapping[str, Any]):
    """A source from a config dict: {"kind": "jsonl" | "parquet", "path": file, glob or list, ...} or
    {"kind": "tfds", "name", "split", ...}: the constructor's arguments."""
    kwargs = dict(spec)
    kind = kwargs.pop("kind", None)
    if "path_or_paths" in kwargs and "path" not in kwargs:   # the argument's earlier name
        kwargs["path"] = kwargs.pop("path_or_paths")
    if kind not in SOURCE_KINDS:
        raise DataError(f"source kind {kind!r} is not one of {sorted(SOURCE_KINDS)} (source spec: {dict(spec)})")
    cls = SOURCE_KINDS[kind]
    signature = inspect.signature(cls)
    try:
        signature.bind(**kwargs)
    except TypeError as e:
        raise DataError(f"source spec {dict(spec)}: {e}; a {kind} source takes {list(signature.parameters)}") from e
    return cls(**kwargs)
