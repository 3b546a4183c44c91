"""Row sources: JSONL, Parquet, TFDS, the research's files, the demo suite and in-memory rows, random access.

Every source derives from `Source`: a grain random-access data source (`len(source)`, `source[i]`) whose rows
are dicts of plain Python values (str, int, float, bool, and lists of dicts for chat messages), plus
`source.describe(i)`, where row i comes from ("data/train.jsonl line 17"), which downstream code puts in its
error messages, and `source.name`.

A config names a source by a spec, `{"kind": ..., ...}`; `open_source(spec, data_root)` opens every kind
through one table (`registry.KINDS`) and applies the `n` and `where` wrappers; `check_spec` checks a spec at
config time. File sources (base.py: `StoredSource`) take `fields={our_name: name_in_file}` to rename fields and
`required=(our_name, ...)`. Nothing is skipped silently: rows leave a source only through `FilteredSource`
(which counts and logs them) or a requested subset (`SubsetSource`).

    base.py      Source, StoredSource (renaming, required fields), ListSource, FilteredSource, SubsetSource
    files.py     JsonlSource, ParquetSource
    tfds.py      TfdsSource
    registry.py  KINDS (kind -> opener and keys), open_source, check_spec
"""
from monitor_jax.data.sources.base import (FilteredSource, ListSource, Source, StoredSource, SubsetSource,
                                           describe)
from monitor_jax.data.sources.files import FileSource, JsonlSource, ParquetSource
from monitor_jax.data.sources.registry import KINDS, WRAPPER_KEYS, Kind, check_spec, open_source, reads_data_root
from monitor_jax.data.sources.tfds import TfdsSource
from monitor_jax.errors import DataError

__all__ = ["KINDS", "WRAPPER_KEYS", "DataError", "FileSource", "FilteredSource", "JsonlSource", "Kind", "ListSource",
           "ParquetSource", "Source", "StoredSource", "SubsetSource", "TfdsSource", "check_spec", "describe",
           "open_source", "reads_data_root"]
