"""What an evaluation mode is: the interface every mode implements, the eval set it runs on, its scored rows.

A mode declares its name and the eval-item keys it takes (with their checks), builds an eval set's encoder
from the task and the item, says whether the monitor writes first (then the evaluator needs a sampler, sized
by the encoders' prompt and generation budgets), and turns (parameters, eval set) into scored rows. The
evaluator does the rest alike for every mode: the non-finite guard, the label-mass warning, loss and metrics.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np

from monitor_jax.data.encode import Encoded
from monitor_jax.data.tasks import ClassificationTask
from monitor_jax.errors import ConfigError
from monitor_jax.eval.results import SetResult
from monitor_jax.eval.scoring import Scored, Scorer
from monitor_jax.generate.sampler import Generation, Sampler

Progress = Callable[[int], None]


@dataclasses.dataclass
class EvalSet:
    """A task over a source's rows, encoded once by its mode's encoder (a writing mode's examples are its
    generation prompts), under a name unique in the run."""
    name: str                           # report rows, metric keys
    task: ClassificationTask
    heldout: bool
    rows: list[dict]
    examples: list[Encoded]
    mode: "Mode"
    encoder: Any
    calibration: "EvalSet | None" = None    # rows the accuracy threshold is chosen on

    @property
    def writer(self):
        """The encoder of a mode in which the monitor writes first (its prompt and generation budgets)."""
        return self.encoder if self.mode.writes_first else None

    @property
    def labels(self) -> np.ndarray:
        return np.array([ex.label for ex in self.examples])

    @property
    def truncated(self) -> int:
        return sum(ex.truncated for ex in self.examples)


@dataclasses.dataclass(frozen=True)
class Needs:
    """What a mode's encoder may take from the assembly: tasks by name, and judges by spec (built once each)."""
    task: Callable[[str], Any]
    judge: Callable[[str], Any]


@dataclasses.dataclass
class Scores:
    """A mode's scored rows, in row order, and what it adds to the set's result (results.SetResult: `extras`
    for report.json, `row_extras` for scores.jsonl, `metrics` logged as eval/NAME/KEY)."""
    log_odds: np.ndarray
    p_positive: np.ndarray
    label_mass: np.ndarray      # P(positive) + P(negative) over the vocabulary, per row
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)
    row_extras: dict[str, list] = dataclasses.field(default_factory=dict)
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)

    @classmethod
    def of(cls, scored: Sequence[Scored], **extra) -> "Scores":
        return cls(np.array([x.log_odds for x in scored]), np.array([x.p_positive for x in scored]),
                   np.array([x.label_mass for x in scored]), **extra)


class Mode:
    """One way of evaluating a set. Subclasses set the class attributes and implement `encoder` and `run`."""
    name: ClassVar[str]
    keys: ClassVar[tuple[str, ...]] = ()    # the eval-item keys this mode alone takes
    budget_key: ClassVar[str] = ""          # the item key of its generation budget (a positive integer)
    calibration: ClassVar[bool] = True      # an item may name a calibration source
    writes_first: ClassVar[bool] = False    # the monitor writes before it is scored: the evaluator needs a sampler
    judged: ClassVar[bool] = False          # something other than the evaluated parameters scores the rows
    passes: ClassVar[int] = 1               # progress units per row (generation and scoring: 2)
    encoder_type: ClassVar[type] = object   # what `encoder` builds (an eval set built by hand finds its mode by it)
    legend: ClassVar[str] = ""              # the ROC-by-domain legend
    line_style: ClassVar[str] = "-"
    roc_label: ClassVar[str] = ""           # after the set's name in the ROC legend

    def check(self, item: Mapping[str, Any], where: str) -> None:
        """The item's own keys, before anything is built; a ConfigError names the key (`where`: eval.tasks[i])."""
        if self.budget_key:
            budget = item.get(self.budget_key)
            if isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0:
                raise ConfigError(f"{where}.{self.budget_key}={budget!r}: {self.name} mode needs a positive integer "
                                  f"budget")
        if not self.calibration and item.get("calibration"):
            raise ConfigError(f"{where}: calibration is not supported in {self.name} mode")

    def encoder(self, task: ClassificationTask, tokenizer, max_length: int, item: Mapping[str, Any], needs: Needs):
        """The eval set's encoder: row -> example (`max_length`: the largest scoring bucket)."""
        raise NotImplementedError

    def labels(self, s: EvalSet) -> tuple[str, str]:
        """The label strings that are scored (the report's positive and negative)."""
        return s.task.positive, s.task.negative

    def run(self, params, s: EvalSet, scorer: Scorer, sampler: Sampler | None, progress: Progress) -> Scores:
        """Scores of every row of `s` in row order (`scorer` scores with `params`; `sampler` writes with them)."""
        raise NotImplementedError

    def report_lines(self, sets: list[SetResult]) -> list[str]:
        """report.md's section for this mode's sets (none by default)."""
        return []


class WritingMode(Mode):
    """A mode in which the monitor writes first (greedy, from each row's prompt), then something is scored."""
    calibration = False
    writes_first = True
    passes = 2

    def write(self, params, s: EvalSet, sampler: Sampler, progress: Progress) -> list[Generation]:
        """Greedy writing from every row's prompt, in row order."""
        gens = sampler.generate([ex.tokens.tolist() for ex in s.examples], max_new_tokens=s.encoder.max_new_tokens,
                                params=params)
        progress(len(gens))
        return gens
