"""The base class of every source, the in-memory source, and the wrappers that keep some of a source's rows."""
from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from monitor_jax.errors import DataError

logger = logging.getLogger("monitor_jax.data")


class Source:
    """A grain random-access source of rows: `len(source)`, `source[i]` (a dict of plain Python values),
    `source.describe(i)` (where row i comes from, for error messages) and `source.name` (for messages)."""

    name = "rows"

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, i: int) -> dict[str, Any]:
        raise NotImplementedError

    def describe(self, i: int) -> str:
        return f"{self.name} row {i}"

    def validate(self) -> None:
        """Read every row; raises the first error (malformed row, missing field)."""
        for i in range(len(self)):
            self[i]


def describe(source, i: int) -> str:
    """Where row i of a source, or of a plain sequence of rows, comes from ("data.jsonl line 3")."""
    return source.describe(i) if isinstance(source, Source) else f"row {i}"


class StoredSource(Source):
    """Rows read from storage (files, TFDS): field renaming and required fields.

    `fields={our_name: name_in_file}` renames fields (fields not mentioned pass through unchanged);
    `required=(our_name, ...)`: a row without one of them, or with it null, is a `DataError` naming the field,
    the fields the row has, and where the row is.
    """

    def __init__(self, fields: Mapping[str, str] | None, required: Sequence[str]):
        self.fields = dict(fields or {})
        self.required = tuple(required)
        self._renamed = set(self.fields.values())

    def _read(self, i: int) -> dict[str, Any]:
        """Row i as stored, before renaming."""
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


class ListSource(Source):
    """Rows held in memory (the demo suite, tests)."""

    def __init__(self, rows: Sequence[Mapping[str, Any]], name: str = "rows"):
        self.rows, self.name = list(rows), name

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Mapping[str, Any]:
        return self.rows[i]


class _Selection(Source):
    """The rows of `source` at `kept` (ascending indices into it), in the source's order."""

    def __init__(self, source: Source, kept: np.ndarray, name: str):
        self.source, self.name, self._kept = source, name, kept

    def __len__(self) -> int:
        return len(self._kept)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.source[int(self._kept[i])]

    def describe(self, i: int) -> str:
        return self.source.describe(int(self._kept[i]))


class FilteredSource(_Selection):
    """The rows of `source` for which `predicate(row)` is true, chosen once at construction.

    The counts are logged and available from `report()`; a filter that drops every
    row is an error. The predicate is not kept, so the filtered source pickles
    even when the predicate is a lambda. Nothing else drops rows silently.
    """

    def __init__(self, source: Source, predicate: Callable[[dict[str, Any]], bool], name: str):
        kept = []
        for i in range(len(source)):
            row = source[i]
            try:
                keep = predicate(row)
            except Exception as e:
                raise DataError(f"filter {name!r} failed on {source.describe(i)}: {e!r}") from e
            if keep:
                kept.append(i)
        super().__init__(source, np.asarray(kept, dtype=np.int64), name)
        self.dropped = len(source) - len(kept)
        logger.info("filter %r kept %d rows and dropped %d of %d", name, len(kept), self.dropped, len(source))
        if not kept:
            raise DataError(f"filter {name!r} dropped all {len(source)} rows")

    def report(self) -> dict[str, Any]:
        """{name, kept, dropped}: how many rows the filter kept and dropped."""
        return dict(name=self.name, kept=len(self), dropped=self.dropped)


class SubsetSource(_Selection):
    """`n` rows of a source chosen by a seeded permutation, kept in the source's order; a source with fewer
    than `n` rows is an error (never a smaller set)."""

    def __init__(self, source: Source, n: int, seed: int = 0):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise DataError(f"n={n!r} must be a positive integer (the rows to take from {source.name})")
        if n > len(source):
            raise DataError(f"{source.name} has {len(source)} rows; n={n} asks for more")
        super().__init__(source, np.sort(np.random.default_rng(seed).permutation(len(source))[:n]),
                         f"{source.name} ({n} rows, seed {seed})")
