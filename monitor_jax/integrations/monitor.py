"""A trained monitor, loaded once, scoring agent transcripts: what the ControlArena monitor and the post-hoc
log scoring share."""
from __future__ import annotations

import dataclasses
import math
import runpy
from pathlib import Path
from typing import Any, Mapping, Sequence

import jax

from monitor_jax import assemble
from monitor_jax.config import set_key, validate
from monitor_jax.data.encode import ClassificationEncoder
from monitor_jax.data.sources.agents import AGENT_KINDS
from monitor_jax.data.transcripts import render_transcript
from monitor_jax.errors import ConfigError, NonFiniteError


def load_config(config: Any, overrides: Mapping[str, Any] | None = None):
    """A config: a config file's `get_config()` (as `--config=FILE`), or a ConfigDict; then `overrides`
    ({"eval.batch_size": 8}, as --config.KEY=VALUE)."""
    if isinstance(config, (str, Path)):
        if not Path(config).is_file():
            raise ConfigError(f"monitor config {config} does not exist")
        config = runpy.run_path(str(config))["get_config"]()
    for key, value in dict(overrides or {}).items():
        set_key(config, key, value)
    return config


RENDER_DEFAULTS = dict(tool_output_limit=4000, reasoning=False, fence=True)   # the agent sources' defaults


def render_settings(config, task: str) -> dict[str, Any]:
    """How `task`'s transcripts were rendered where the config reads them (its first training source of kind
    inspect or trajectories, else its evaluation's): a monitor reads transcripts as it was trained on them."""
    entries = list(config.data.classification) + list(config.eval.tasks)
    for entry in entries:
        source = entry.get("source")
        if entry.get("task") == task and hasattr(source, "get") and source.get("kind") in AGENT_KINDS:
            return {k: source.get(k, v) for k, v in RENDER_DEFAULTS.items()}
    return dict(RENDER_DEFAULTS)


@dataclasses.dataclass(frozen=True)
class Verdict:
    log_odds: float           # log P(positive label) - log P(negative label) at the label position
    p_positive: float         # sigmoid(log_odds): ControlArena's suspicion score
    truncated: int            # transcript tokens the task's truncation policy cut (0: none)


class TrainedMonitor:
    """A run's monitor: `config` (a config file or ConfigDict) and `checkpoint` ("" the work directory's latest
    or best as the config says, a checkpoint or exported Hugging Face directory, None the base model), scoring
    with `task`'s prompt. Transcripts are rendered as data/transcripts.py does for training, with the settings
    of the task's agent source in the config (render_settings) unless given here."""

    def __init__(self, config: Any, checkpoint: str | None = "", task: str = "control_arena",
                 overrides: Mapping[str, Any] | None = None, tool_output_limit: int | None = None,
                 reasoning: bool | None = None, fence: bool | None = None):
        c = load_config(config, overrides)
        validate(c, jax.device_count(), training=False)
        self.rt = assemble.runtime(c, checkpoint)
        self.scorer = assemble.scorer(self.rt)
        self.task = self.rt.task(task)
        self.encoder = ClassificationEncoder(self.task, self.rt.tokenizer, self.scorer.max_length)
        given = dict(tool_output_limit=tool_output_limit, reasoning=reasoning, fence=fence)
        self.render = {**render_settings(c, task), **{k: v for k, v in given.items() if v is not None}}

    @property
    def description(self) -> str:
        return f"{self.task.name} prompt, {self.rt.description}"

    def transcript(self, messages: Sequence[Mapping[str, Any]], where: str = "transcript") -> str:
        return render_transcript(messages, where=where, **self.render)

    def score(self, texts: Sequence[str], wheres: Sequence[str] | None = None) -> list[Verdict]:
        """Each text (a rendered transcript) scored with the task's prompt, in order."""
        wheres = list(wheres or [f"transcript {i}" for i in range(len(texts))])
        examples = [self.encoder({self.task.content_field: t}, w, require_label=False)
                    for t, w in zip(texts, wheres)]
        out: list[Verdict | None] = [None] * len(examples)
        with jax.set_mesh(self.rt.mesh):
            for s in self.scorer.score(self.rt.params, iter(examples)):
                if not (math.isfinite(s.log_odds) and math.isfinite(s.p_positive)):
                    raise NonFiniteError(f"{wheres[s.index]}: the score is {s.log_odds} with {self.description}")
                out[s.index] = Verdict(float(s.log_odds), float(s.p_positive), int(examples[s.index].truncated_tokens))
        return out
