"""Evaluation of eval sets: encode once, let each set's mode score it, compute metrics.

Held-out domains and prompt variants are the same thing here: a task (prompt)
over a source (rows), under a name unique in the run (the task's name unless
two sets share it). The mean AUROC over sets marked `heldout` is the usual
selection metric for checkpoints. How a set is scored (single-token, thinking,
summarize, or a registered plug-in) is its mode's business (eval/modes/); the
evaluator does the same for every mode around it.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Sequence

import jax
import numpy as np
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from monitor_jax.data.sources import describe
from monitor_jax.data.tasks import ClassificationTask
from monitor_jax.errors import NonFiniteError
from monitor_jax.eval import modes
from monitor_jax.eval.metrics import MetricError, binary_cross_entropy, monitor_metrics
from monitor_jax.eval.modes import EvalSet, Mode, Scores
from monitor_jax.eval.results import EvalResult, Interval, RowScores, SetResult
from monitor_jax.eval.scoring import Scorer
from monitor_jax.generate.sampler import Sampler
from monitor_jax.settings import setting

log = logging.getLogger("monitor_jax.eval")
# Below this mean P(positive) + P(negative) at the answer position, the model would mostly write something
# other than the two labels: their log-odds then say little about what the model "thinks" (docs/tasks.md).
LABEL_MASS_WARNING = 0.5


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """The `eval` config section: the eval sets and how they are scored."""
    tasks: list = setting([], "[{'task', 'source', 'heldout', 'calibration', 'name', 'mode', ...}]: the eval sets "
                          "(docs/tasks.md)", check=False)
    every: int = setting(0, "steps between evaluations during training (0 = before and after only)", low=0)
    before: bool = setting(True, "evaluate before the first step (the zero-shot row). A sweep's runs share it: "
                           "a study sets False and scores the base model once with `eval`")
    batch_size: int = setting(32, "rows per scoring batch", low=1)
    buckets: tuple = setting((128, 256, 512), "prompt-length buckets (one compilation each)", low=1)
    bootstrap: int = setting(1000, "resamples for the 95% intervals (0 = none)", low=0)
    max_rows: int = setting(0, "the first N rows of each eval source (0 = all)", low=0)
    pack_max: int = setting(0, "> 0: up to that many prompts packed into each row of the largest bucket", low=0)


def unique_names(tasks: Sequence[str], names: Sequence[str | None]) -> list[str]:
    """Each set's name: its own, else its task's, with `#2`, `#3`... when a task is used again."""
    out, seen = [], {}
    for task, name in zip(tasks, names):
        if not name:
            seen[task] = seen.get(task, 0) + 1
            name = task if seen[task] == 1 else f"{task}#{seen[task]}"
        out.append(name)
    return out


def item_names(items: Sequence) -> list[str]:
    """Each eval item's name (its own, else its task's, made unique): report rows and eval/NAME/ metrics."""
    return unique_names([item["task"] for item in items], [item.get("name") for item in items])


def make_eval_set(name: str, task: ClassificationTask, heldout: bool, source, encoder, max_rows: int = 0,
                  calibration=None, mode: Mode | None = None) -> EvalSet:
    """Encode a source's rows (the first `max_rows`, 0 = all) and an optional calibration source with `mode`'s
    encoder (default: the mode that builds such encoders, e.g. a ThinkingEncoder's thinking mode)."""
    mode = mode or modes.for_encoder(encoder)

    def encoded(what: str, src, n: int) -> EvalSet:
        rows = [src[i] for i in range(n)]
        return EvalSet(what, task, heldout, rows, [encoder(row, describe(src, i)) for i, row in enumerate(rows)],
                       mode, encoder)

    s = encoded(name, source, len(source) if not max_rows else min(len(source), max_rows))
    s.calibration = encoded(f"{name} calibration", calibration, len(calibration)) if calibration else None
    return s


class Evaluator:
    """Scores every set; `check_label_mass` (pretrained models) warns once per set when the model puts
    little probability on the two labels."""

    def __init__(self, sets: list[EvalSet], scorer: Scorer, bootstrap: int = 0, check_label_mass: bool = False,
                 sampler: Sampler | None = None):
        self.sets, self.scorer, self.bootstrap, self.check_label_mass = sets, scorer, bootstrap, check_label_mass
        self.sampler = sampler   # needed by the sets whose mode writes first
        writing = sorted({s.mode.name for s in sets if s.mode.writes_first})
        if sampler is None and writing:
            raise ValueError(f"eval sets of mode(s) {writing} need a sampler (the monitor writes first)")
        self._warned: set[str] = set()

    def run(self, params, step: int = 0, bootstrap: int | None = None) -> EvalResult:
        """Every set's result and the flat eval/... metrics.

        `bootstrap`: resamples for the 95% intervals (default: the evaluator's own count).
        """
        samples = self.bootstrap if bootstrap is None else bootstrap
        total = sum(len(s.examples) * s.mode.passes + (len(s.calibration.examples) if s.calibration else 0)
                    for s in self.sets)
        results = []
        with tqdm(total=total, desc=f"eval (step {step})", unit="row", disable=jax.process_index() != 0,
                  leave=False) as bar:
            for s in self.sets:
                scores = s.mode.run(params, s, self.scorer, self.sampler, bar.update)
                _check_finite(s, scores.log_odds)
                label_mass = float(np.mean(scores.label_mass))
                self._warn_label_mass(s, label_mass)
                calibration = self._calibration(params, s, bar.update)
                try:
                    metrics = monitor_metrics(s.labels, scores.log_odds, scores.p_positive, calibration=calibration,
                                              samples=samples, seed=step)
                except MetricError as e:
                    raise MetricError(f"eval set {s.name}: {e}") from None
                results.append(_result(s, scores, label_mass, metrics))
        return EvalResult.of(step, results)

    def _calibration(self, params, s: EvalSet, progress) -> tuple[np.ndarray, np.ndarray] | None:
        """(labels, log-odds) of the set's calibration rows, scored by its mode, when it has them."""
        if not s.calibration:
            return None
        return s.calibration.labels, s.mode.run(params, s.calibration, self.scorer, self.sampler, progress).log_odds

    def _warn_label_mass(self, s: EvalSet, label_mass: float) -> None:
        if self.check_label_mass and label_mass < LABEL_MASS_WARNING and s.name not in self._warned:
            self._warned.add(s.name)
            log.warning("eval set %s: the model puts %.3f of its probability on the labels %r/%r at the answer "
                        "position (mean over rows): it would mostly write something else, so the log-odds are a "
                        "weak monitor signal; check the label strings (docs/tasks.md)",
                        s.name, label_mass, s.task.positive, s.task.negative)


def _check_finite(s: EvalSet, log_odds: np.ndarray) -> None:
    bad = np.flatnonzero(~np.isfinite(log_odds))
    if bad.size:
        row = s.rows[bad[0]]
        raise NonFiniteError(f"eval set {s.name}: {bad.size} of {len(log_odds)} scores are not finite (first: row "
                             f"{bad[0]}, id {row.get('id', bad[0])!r}, score {log_odds[bad[0]]}); the parameters or "
                             f"the inputs are broken")


def _result(s: EvalSet, scores: Scores, label_mass: float, metrics: dict) -> SetResult:
    labels = s.labels
    positive, negative = s.mode.labels(s)
    rows = RowScores([r.get("id", i) for i, r in enumerate(s.rows)], labels, scores.log_odds, scores.p_positive,
                     [ex.truncated_tokens for ex in s.examples], scores.row_extras)
    lengths = [len(ex.tokens) + ex.truncated_tokens for ex in s.examples]      # before any cut
    return SetResult(name=s.name, task=s.task.name, domain=s.task.domain, heldout=s.heldout, mode=s.mode.name,
                     prompt=" / ".join(f"{role}: {text}" for role, text in s.task.messages), positive=positive,
                     negative=negative, n=len(labels), truncated=s.truncated, label_mass=label_mass,
                     loss=binary_cross_entropy(labels, scores.p_positive),
                     metrics={k: Interval(**m) for k, m in metrics.items()},
                     length_auroc=float(roc_auc_score(labels, lengths)), extras=scores.extras,
                     extra_metrics=scores.metrics, scores=rows)
