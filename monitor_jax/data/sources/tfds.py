"""Prepared TFDS dataset splits (array_record or parquet), read by `tfds.data_source`."""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np

from monitor_jax.data.sources.base import StoredSource
from monitor_jax.errors import DataError


class TfdsSource(StoredSource):
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
