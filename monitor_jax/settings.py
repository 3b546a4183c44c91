"""Settings declared beside the code that reads them: one typed, frozen dataclass per config section.

A library component declares its config keys as fields made by `setting(default, doc, ...)`: the default,
the range or the choices, and a one-line doc. `monitor_jax/config.py` derives `base_config()` (what config
files start from) and its checks from these declarations, so adding a field adds the key, its check and its
doc, with nothing to edit in config.py (levanter's style: the dataclass is the schema).

    @dataclasses.dataclass(frozen=True)
    class LossConfig:
        chunk_size: int = setting(256, "response tokens per chunk of the instruction loss", low=1)

`build(LossConfig, c.loss)` turns the section of a run's config into the dataclass the library takes.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any, Mapping, Sequence

from monitor_jax.errors import ConfigError


def setting(default: Any, doc: str, *, low: float | None = None, high: float | None = None,
            choices: Sequence[Any] | None = None, check: bool = True) -> Any:
    """A config field: its default, a one-line doc, and its range [low, high] or its choices.

    The type is the default's (an int default takes integers only, a float default any finite number, a tuple
    a list or tuple). `check=False` leaves a structured value (a dict or list of dicts) to the checks of the
    code that reads it, which name the key themselves.
    """
    meta = dict(doc=doc, low=low, high=high, choices=tuple(choices) if choices is not None else None, check=check)
    if isinstance(default, (dict, list)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class Field:
    """One declared setting, as config.py sees it."""
    name: str
    default: Any
    doc: str
    low: float | None
    high: float | None
    choices: tuple | None
    check: bool


def fields(cls) -> list[Field]:
    """The settings a dataclass declares (fields made without `setting` are not config keys)."""
    out = []
    for f in dataclasses.fields(cls):
        if "doc" not in f.metadata:
            continue
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        m = f.metadata
        out.append(Field(f.name, default, m["doc"], m["low"], m["high"], m["choices"], m["check"]))
    return out


def defaults(cls) -> dict[str, Any]:
    """{key: default} of a settings dataclass: the section of `base_config()`."""
    return {f.name: f.default for f in fields(cls)}


def _plain(value: Any) -> Any:
    """A config value as plain Python (ConfigDicts to dicts, lists of them to lists of dicts)."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return value


def check(cls, values: Mapping[str, Any], prefix: str) -> None:
    """Each declared key of `values` has its declared type and lies in its range or among its choices; the
    error names the key (`prefix.name`)."""
    for f in fields(cls):
        if not f.check:
            continue
        key, v = f"{prefix}.{f.name}" if prefix else f.name, values[f.name]
        if f.choices is not None:
            if v not in f.choices:
                raise ConfigError(f"{key}={v!r}; choose one of {f.choices}")
            continue
        if isinstance(f.default, bool):
            if not isinstance(v, bool):
                raise ConfigError(f"{key}={v!r} must be true or false")
        elif isinstance(f.default, (int, float)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"{key}={v!r} must be a finite number")
            if isinstance(f.default, int) and not isinstance(v, int):
                raise ConfigError(f"{key}={v!r} must be an integer")
            if (f.low is not None and v < f.low) or (f.high is not None and v > f.high):
                bound = f">= {f.low}" if f.high is None else f"in [{f.low}, {f.high}]"
                raise ConfigError(f"{key}={v!r} must be {bound}")
        elif isinstance(f.default, str):
            if not isinstance(v, str):
                raise ConfigError(f"{key}={v!r} must be a string")
        elif isinstance(f.default, tuple) and f.low is not None:
            # A tuple with a lower bound: sizes, e.g. prompt-length buckets (every item an integer >= low).
            items = list(v)
            if not items or any(isinstance(b, bool) or not isinstance(b, int) or b < f.low for b in items):
                raise ConfigError(f"{key}={tuple(items)} must be positive prompt lengths" if f.low == 1 else
                                  f"{key}={tuple(items)} must be integers >= {f.low}")


def lookup(config: Mapping[str, Any], key: str) -> Any:
    """The value of a dotted key (`optim.lr`) in a config."""
    for part in key.split("."):
        config = config[part]
    return config


def build(cls, values: Mapping[str, Any], **extra: Any):
    """The dataclass of a config section (its declared keys, as plain Python values), plus `extra` fields
    that are not settings (things the assembly derives)."""
    return cls(**{f.name: _plain(values[f.name]) for f in fields(cls)}, **extra)


def doc_table(sections: Mapping[str, Any]) -> str:
    """Every key with its default, range or choices and doc, as a Markdown table (docs/settings.md)."""
    rows = ["| key | default | range / choices | what |", "| --- | --- | --- | --- |"]
    for prefix, cls in sections.items():
        for f in fields(cls):
            key = f"{prefix}.{f.name}" if prefix else f.name
            bound = (" / ".join(map(repr, f.choices)) if f.choices is not None else
                     "" if f.low is None and f.high is None else
                     f">= {f.low}" if f.high is None else f"[{f.low}, {f.high}]")
            rows.append(f"| `{key}` | `{f.default!r}` | {bound} | {f.doc} |")
    return "\n".join(rows)
