"""Evaluation of eval sets: encode once, score with the jitted scorer, compute metrics.

Held-out domains and prompt variants are the same thing here: a task (prompt)
over a source (rows), under a name unique in the run (the task's name unless
two sets share it). The mean AUROC over sets marked `heldout` is the usual
selection metric for checkpoints.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Sequence

import jax
import numpy as np
from tqdm import tqdm

from monitor_jax.data.encode import ClassificationEncoder, Encoded
from monitor_jax.data.sources import describe
from monitor_jax.data.tasks import ClassificationTask
from monitor_jax.errors import NonFiniteError
from monitor_jax.eval.metrics import MetricError, monitor_metrics
from monitor_jax.eval.scoring import Scorer
from monitor_jax.eval.summarize import SummaryEncoder
from monitor_jax.eval.thinking import ThinkingEncoder, Thought, thinking_summary
from monitor_jax.eval.writing import WritingEncoder
from monitor_jax.generate.sampler import Generation, Sampler

log = logging.getLogger("monitor_jax.eval")
# Below this mean P(positive) + P(negative) at the answer position, the model would mostly write something
# other than the two labels: their log-odds then say little about what the model "thinks" (docs/tasks.md).
LABEL_MASS_WARNING = 0.5


@dataclasses.dataclass
class EvalSet:
    name: str                                   # unique in the run: report rows, metric keys
    task: ClassificationTask
    heldout: bool
    rows: list[dict]
    examples: list[Encoded]                     # thinking mode: the generation prompts (scored after reasoning)
    calibration: list[Encoded] | None = None    # rows the accuracy threshold is chosen on
    thinking: ThinkingEncoder | None = None     # set: the monitor reasons before it is scored
    summarize: SummaryEncoder | None = None     # set: the monitor summarizes, a judge scores the summary

    @property
    def mode(self) -> str:
        return "thinking" if self.thinking else "summarize" if self.summarize else "single_token"

    @property
    def writer(self) -> WritingEncoder | None:
        """The encoder of a mode in which the monitor writes first (its prompt budget and generation budget)."""
        return self.thinking or self.summarize

    @property
    def labels(self) -> np.ndarray:
        return np.array([ex.label for ex in self.examples])

    @property
    def truncated(self) -> int:
        return sum(ex.truncated for ex in self.examples)


def unique_names(tasks: Sequence[str], names: Sequence[str | None]) -> list[str]:
    """Each set's name: its own, else its task's, with `#2`, `#3`... when a task is used again."""
    out, seen = [], {}
    for task, name in zip(tasks, names):
        if not name:
            seen[task] = seen.get(task, 0) + 1
            name = task if seen[task] == 1 else f"{task}#{seen[task]}"
        out.append(name)
    return out


def make_eval_set(name: str, task: ClassificationTask, heldout: bool, source,
                  encoder: ClassificationEncoder | ThinkingEncoder, max_rows: int = 0, calibration=None) -> EvalSet:
    """Encode a source's rows (the first `max_rows`, 0 = all) and an optional calibration source.

    A `ThinkingEncoder` or `SummaryEncoder` makes a thinking or summarization set: its examples are the
    generation prompts."""
    n = len(source) if not max_rows else min(len(source), max_rows)
    rows = [source[i] for i in range(n)]
    examples = [encoder(row, describe(source, i)) for i, row in enumerate(rows)]
    cal = [encoder(calibration[i], describe(calibration, i)) for i in range(len(calibration))] if calibration else None
    if isinstance(encoder, ThinkingEncoder):
        return EvalSet(name, task, heldout, rows, examples, cal, thinking=encoder)
    if isinstance(encoder, SummaryEncoder):
        return EvalSet(name, task, heldout, rows, examples, cal, summarize=encoder)
    return EvalSet(name, task, heldout, rows, examples, cal)


class Evaluator:
    """Scores every set; `check_label_mass` (pretrained models) warns once per set when the model puts
    little probability on the two labels."""

    def __init__(self, sets: list[EvalSet], scorer: Scorer, bootstrap: int = 0, check_label_mass: bool = False,
                 sampler: Sampler | None = None):
        self.sets, self.scorer, self.bootstrap, self.check_label_mass = sets, scorer, bootstrap, check_label_mass
        self.sampler = sampler   # needed by thinking-mode sets
        if sampler is None and any(s.writer for s in sets):
            raise ValueError("thinking and summarization eval sets need a sampler")
        self._warned: set[str] = set()

    def _write(self, params, s: EvalSet, progress) -> list[Generation]:
        """Greedy writing (reasoning or a summary) from every row's prompt, in row order."""
        gens = self.sampler.generate([ex.tokens.tolist() for ex in s.examples], max_new_tokens=s.writer.max_new_tokens,
                                     params=params)
        progress(len(gens))
        return gens

    def _think(self, params, s: EvalSet, progress) -> tuple[list[Encoded], list[Thought]]:
        """Each row's scored example after its own reasoning (in row order)."""
        out = [s.thinking.scored(ex.tokens.tolist(), g, ex.label, ex.truncated_tokens, f"{s.name} row {i}")
               for i, (g, ex) in enumerate(zip(self._write(params, s, progress), s.examples))]
        return [e for e, _ in out], [t for _, t in out]

    def _summarize(self, params, s: EvalSet, progress) -> tuple[list[Encoded], list[str]]:
        """The judge's examples over each row's summary alone (in row order), and the summaries."""
        summaries = [self.sampler.text(g) for g in self._write(params, s, progress)]
        return ([s.summarize.judged(text, ex.label, f"{s.name} row {i}")
                 for i, (text, ex) in enumerate(zip(summaries, s.examples))], summaries)

    def run(self, params, step: int = 0, bootstrap: int | None = None) -> dict[str, Any]:
        """{"tasks": [per-set dict with metrics and scores], "flat": {"eval/NAME/...": float}}.

        `bootstrap`: resamples for the 95% intervals (default: the evaluator's own count).
        """
        samples = self.bootstrap if bootstrap is None else bootstrap
        total = sum(len(s.examples) * (2 if s.writer else 1) + len(s.calibration or ()) for s in self.sets)
        out, flat, heldout = [], {}, []
        with tqdm(total=total, desc=f"eval (step {step})", unit="row", disable=jax.process_index() != 0,
                  leave=False) as bar:
            for s in self.sets:
                examples, thoughts, summaries = s.examples, None, None
                scorer, scored_params = self.scorer, params
                if s.thinking:
                    examples, thoughts = self._think(params, s, bar.update)
                elif s.summarize:   # the judge scores, with its own parameters
                    examples, summaries = self._summarize(params, s, bar.update)
                    scorer, scored_params = s.summarize.judge.scorer, s.summarize.judge.params
                scored = scorer.score_all(scored_params, examples, progress=bar.update)
                log_odds = np.array([x.log_odds for x in scored])
                probs = np.array([x.p_positive for x in scored])
                bad = np.flatnonzero(~np.isfinite(log_odds))
                if bad.size:
                    row = s.rows[bad[0]]
                    raise NonFiniteError(f"eval set {s.name}: {bad.size} of {len(log_odds)} scores are not finite "
                                         f"(first: row {bad[0]}, id {row.get('id', bad[0])!r}, score "
                                         f"{log_odds[bad[0]]}); the parameters or the inputs are broken")
                label_mass = float(np.mean([x.label_mass for x in scored]))
                if self.check_label_mass and label_mass < LABEL_MASS_WARNING and s.name not in self._warned:
                    self._warned.add(s.name)
                    log.warning("eval set %s: the model puts %.3f of its probability on the labels %r/%r at the "
                                "answer position (mean over rows): it would mostly write something else, so the "
                                "log-odds are a weak monitor signal; check the label strings (docs/tasks.md)",
                                s.name, label_mass, s.task.positive, s.task.negative)
                labels = s.labels
                eps = 1e-7
                loss = float(-np.mean(labels * np.log(probs + eps) + (1 - labels) * np.log(1 - probs + eps)))
                calibration = None
                if s.calibration:
                    cal = self.scorer.score_all(params, s.calibration, progress=bar.update)
                    calibration = (np.array([ex.label for ex in s.calibration]), np.array([x.log_odds for x in cal]))
                try:
                    metrics = monitor_metrics(labels, log_odds, probs, calibration=calibration, samples=samples,
                                              seed=step)
                except MetricError as e:
                    raise MetricError(f"eval set {s.name}: {e}") from None
                out.append(dict(name=s.name, task=s.task.name, domain=s.task.domain, heldout=s.heldout, mode=s.mode,
                                prompt=s.task.messages, positive=s.task.positive, negative=s.task.negative,
                                n=len(labels), truncated=s.truncated,
                                truncated_tokens=[ex.truncated_tokens for ex in s.examples], loss=loss,
                                label_mass=label_mass, metrics=metrics, log_odds=log_odds, p_positive=probs,
                                labels=labels, ids=[r.get("id", i) for i, r in enumerate(s.rows)]))
                flat[f"eval/{s.name}/auroc"] = metrics["auroc"]["value"]
                flat[f"eval/{s.name}/loss"] = loss
                flat[f"eval/{s.name}/label_mass"] = label_mass
                flat[f"eval/{s.name}/truncated"] = s.truncated
                if summaries is not None:
                    out[-1].update(summaries=summaries, judge=s.summarize.judge.description,
                                   judge_truncated=sum(ex.truncated for ex in examples),
                                   judge_task=s.summarize.judge_task.name,
                                   positive=s.summarize.judge_task.positive, negative=s.summarize.judge_task.negative)
                if thoughts is not None:
                    summary = thinking_summary(thoughts, log_odds)
                    out[-1].update(thinking=summary, reasoning=[t.reasoning for t in thoughts],
                                   free_answer=[t.free_answer for t in thoughts])
                    # answer_agreement is undefined (NaN) when no row wrote a label: left out, never written as NaN
                    flat.update({f"eval/{s.name}/{k}": v for k, v in summary.items() if np.isfinite(v)})
                if s.heldout:
                    heldout.append(metrics["auroc"]["value"])
        flat["eval/mean_auroc"] = float(np.mean([t["metrics"]["auroc"]["value"] for t in out]))
        if heldout:
            flat["eval/mean_heldout_auroc"] = float(np.mean(heldout))
        return dict(step=step, tasks=out, flat=flat)
