"""The source registry: every kind of source a config can name, in one table, opened by one function.

A source spec is a dict `{"kind": KIND, ...that kind's keys..., "n", "seed", "where"}`. `open_source(spec,
data_root)` checks it (an unknown kind, a missing or an unknown key is a `DataError` naming it and saying what
the kind takes), opens the kind, then applies the wrappers every kind shares:

- `"n"`: a seeded random subset of that many rows (`"seed"`, default 0; fewer rows than `n` is an error),
  kept in the source's order (`SubsetSource`). A kind that takes `n` itself makes its rows to that count
  instead (the demo suite generates `n` rows).
- `"where": {field: value or [values]}`: only the matching rows (`FilteredSource`, which counts and logs what
  it drops).

`check_spec(spec, data_root, key)` checks what can be checked before opening (the spec's keys; a research
source's file under `data_root`) and raises a `ConfigError` naming the config key: the config's validation
calls it for every source it names. A new kind is one entry in `KINDS`.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Mapping

from monitor_jax.data.sources.base import FilteredSource, ListSource, Source, SubsetSource
from monitor_jax.data.sources.files import JsonlSource, ParquetSource
from monitor_jax.data.sources.tfds import TfdsSource
from monitor_jax.errors import ConfigError, DataError


@dataclasses.dataclass(frozen=True)
class Kind:
    """One kind of source: `open(keys, data_root)` with the spec's own keys (every `required` key, the
    `optional` ones it has); `check(keys, data_root)`, when given, raises a `DataError` for what can be found
    wrong before opening; `reads_data_root`: the kind reads files under the config's `data_root`."""
    open: Callable[[dict[str, Any], str], Source]
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    check: Callable[[dict[str, Any], str], None] | None = None
    reads_data_root: bool = False

    @property
    def keys(self) -> tuple[str, ...]:
        return (*self.required, *self.optional)


# Keys of every spec, applied around the kind's source (a kind that takes one of them itself handles it).
WRAPPER_KEYS = ("n", "seed", "where")


def _constructor(cls) -> Callable[[dict[str, Any], str], Source]:
    return lambda keys, data_root: cls(**keys)


def _agents():
    from monitor_jax.data.sources import agents     # the Inspect reader is imported only where used

    return agents


def _open_demo(keys: dict[str, Any], data_root: str) -> Source:
    """The demo suite's rows of a domain (or of the instruction set): `n` generated rows, a function of
    (domain, split, seed)."""
    from monitor_jax.data import demo, research

    domain, split, n, seed = keys["domain"], keys["split"], keys.get("n"), keys.get("seed", 0)
    rows = (demo.instruction_rows(split, seed=seed, n=n) if domain == research.INSTRUCTION
            else demo.demo_rows(domain, split, seed=seed, n=n))
    return ListSource(rows, f"demo:{domain}/{split}")


def _research_spec(keys: dict[str, Any], data_root: str) -> dict[str, Any]:
    """A research source as the spec that reads it: the JSONL file DATA_ROOT/DOMAIN/SPLIT.jsonl
    (`research.data_file`) with a data root, the demo suite's rows of that domain without one."""
    from monitor_jax.data import research

    rest = {k: v for k, v in keys.items() if k not in ("domain", "split")}
    if not data_root:
        return {"kind": "demo", "domain": keys["domain"], "split": keys["split"], **rest}
    return {"kind": "jsonl", "path": research.data_file(data_root, keys["domain"], keys["split"]), **rest}


def _open_research(keys: dict[str, Any], data_root: str) -> Source:
    return open_source(_research_spec(keys, data_root))


def _check_research(keys: dict[str, Any], data_root: str) -> None:
    spec = _research_spec(keys, data_root)
    if spec["kind"] == "jsonl" and not os.path.isfile(spec["path"]):
        raise DataError(f"{spec['path']} does not exist (data_root={data_root!r}; the file layout is "
                        f"DATA_ROOT/DOMAIN/SPLIT.jsonl, docs/tasks.md)")


KINDS: dict[str, Kind] = {
    "jsonl": Kind(_constructor(JsonlSource), ("path",), ("fields", "required")),
    "parquet": Kind(_constructor(ParquetSource), ("path",), ("fields", "required")),
    "tfds": Kind(_constructor(TfdsSource), ("name", "split"), ("data_dir", "fields", "required")),
    "rows": Kind(_constructor(ListSource), ("rows",), ("name",)),
    "demo": Kind(_open_demo, ("domain", "split"), ("n", "seed")),
    "inspect": Kind(lambda keys, root: _agents().InspectSource(**keys), ("paths",),
                    ("label", "tool_output_limit", "reasoning", "fence"),
                    check=lambda keys, root: _agents().check_inspect_spec(**keys)),
    "trajectories": Kind(lambda keys, root: _agents().TrajectorySource(**keys), ("paths",),
                         ("labels", "tool_output_limit", "fence")),
    "research": Kind(_open_research, ("domain", "split"), ("n", "seed"), check=_check_research,
                     reads_data_root=True),
}


def _parse(spec: Mapping[str, Any]) -> tuple[Kind, dict[str, Any], dict[str, Any]]:
    """(kind, the kind's own keys, the wrapper keys to apply around it) of a spec; a DataError if it is wrong."""
    if not hasattr(spec, "keys"):
        raise DataError(f"a source spec is a dict with a 'kind' (one of {sorted(KINDS)}); got {spec!r}")
    spec = dict(spec)
    name = spec.get("kind")
    if name not in KINDS:
        raise DataError(f"source kind {name!r} is not one of {sorted(KINDS)} (source spec: {spec})")
    kind = KINDS[name]
    allowed = {"kind", *kind.keys, *WRAPPER_KEYS}
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise DataError(f"source spec {spec} has unknown key(s) {unknown}; a {name} source takes {sorted(allowed)}")
    missing = [k for k in kind.required if k not in spec]
    if missing:
        raise DataError(f"a {name} source needs {' and '.join(kind.required)}; {sorted(spec)} lacks {missing}")
    return (kind, {k: spec[k] for k in kind.keys if k in spec},
            {k: spec[k] for k in WRAPPER_KEYS if k in spec and k not in kind.keys})


def open_source(spec: Mapping[str, Any], data_root: str = "") -> Source:
    """The source a spec names (`KINDS`), with its `n` and `where` wrappers; `data_root`: where research
    sources read their files ("" = the demo suite's rows)."""
    kind, keys, wrappers = _parse(spec)
    source = kind.open(keys, data_root)
    if wrappers.get("n") is not None:
        source = SubsetSource(source, wrappers["n"], wrappers.get("seed", 0))
    where = wrappers.get("where")
    if where:
        allowed = {k: set(v) if isinstance(v, (list, tuple)) else {v} for k, v in dict(where).items()}
        source = FilteredSource(source, lambda row: all(row.get(k) in vs for k, vs in allowed.items()),
                                name=f"{source.name} where {dict(where)}")
    return source


def check_spec(spec: Mapping[str, Any], data_root: str, key: str) -> None:
    """What can be checked of a source spec without opening it: its kind and keys, and a research source's
    file under `data_root`. A ConfigError naming the config `key`."""
    try:
        kind, keys, _ = _parse(spec)
        if kind.check is not None:
            kind.check(keys, data_root)
    except DataError as e:
        raise ConfigError(f"{key}: {e}") from None


def reads_data_root(spec: Mapping[str, Any]) -> bool:
    """Whether a (checked) source spec reads files under the config's `data_root`."""
    return KINDS[dict(spec)["kind"]].reads_data_root
