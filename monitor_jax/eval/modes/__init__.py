"""Evaluation modes, as plug-ins: the registry (an eval item's `mode` names one).

A mode (base.Mode) declares the eval-item keys it takes and checks them, builds an eval set's encoder, says
whether the monitor writes first (the evaluator then needs a sampler), and turns (parameters, eval set) into
scored rows; everything else (config checks, assembly, the evaluator, the report) asks the registry. The
built-ins are registered here: single_token (the default), thinking and summarize. Another mode is one
`register(MyMode())`, from any module imported before the config is validated.
"""
from __future__ import annotations

from typing import Any, Mapping

from monitor_jax.eval.modes.base import EvalSet, Mode, Needs, Scores, WritingMode
from monitor_jax.eval.modes.single_token import SingleToken
from monitor_jax.eval.modes.summarize import Summarize
from monitor_jax.eval.modes.thinking import Thinking

__all__ = ["DEFAULT", "COMMON_KEYS", "EvalSet", "Mode", "Needs", "Scores", "WritingMode", "register", "unregister",
           "get", "of", "names", "registered", "item_keys", "for_encoder"]

DEFAULT = "single_token"    # an item without `mode`
# The keys of every eval item, whatever its mode.
COMMON_KEYS = ("task", "source", "heldout", "calibration", "name", "mode")
_MODES: dict[str, Mode] = {}


def register(mode: Mode) -> Mode:
    if mode.name in _MODES:
        raise ValueError(f"an eval mode named {mode.name!r} is registered already")
    clash = sorted((set(mode.keys) & item_keys()))
    if clash:
        raise ValueError(f"eval mode {mode.name!r}: the item key(s) {clash} belong to another mode already")
    _MODES[mode.name] = mode
    return mode


def unregister(name: str) -> None:
    _MODES.pop(name)


def registered() -> tuple[Mode, ...]:
    """Every mode, in registration order."""
    return tuple(_MODES.values())


def names() -> tuple[str, ...]:
    return tuple(_MODES)


def get(name: str) -> Mode:
    if name not in _MODES:
        raise ValueError(f"no eval mode {name!r}; the registered ones are {names()}")
    return _MODES[name]


def of(item: Mapping[str, Any]) -> Mode:
    """An eval item's mode."""
    return get(item.get("mode", DEFAULT))


def item_keys() -> set[str]:
    """Every key an eval item may have: the common ones and each mode's."""
    return set(COMMON_KEYS).union(*(m.keys for m in _MODES.values()))


def for_encoder(encoder) -> Mode:
    """The first registered mode that builds encoders of exactly this type (an eval set built by hand)."""
    for m in _MODES.values():
        if type(encoder) is m.encoder_type:
            return m
    raise ValueError(f"no eval mode builds a {type(encoder).__name__}; pass the mode")


for _mode in (SingleToken(), Thinking(), Summarize()):
    register(_mode)
