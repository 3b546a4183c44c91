"""Thinking predictions of unlabeled rows: reason, then the log-odds at the answer position after the reasoning.

The rows reach here without their label fields (pipeline.py removes them as it reads the source), so
nothing downstream can use a true label by accident: a source that has labels and one that does not give
the same predictions.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from monitor_jax.errors import NonFiniteError
from monitor_jax.eval.scoring import Scorer
from monitor_jax.eval.thinking import ThinkingEncoder
from monitor_jax.generate.sampler import Sampler


def unlabeled(row: Mapping[str, Any], label_fields: Sequence[str]) -> dict[str, Any]:
    """The row without its label fields."""
    return {k: v for k, v in row.items() if k not in label_fields}


def predict(sampler: Sampler, scorer: Scorer, params, encoder: ThinkingEncoder, rows: Sequence[Mapping[str, Any]],
            wheres: Sequence[str], chunk: int = 256, progress: Callable[[int], None] = lambda n: None
            ) -> Iterator[dict[str, Any]]:
    """One prediction per row, in row order, `chunk` rows at a time (generation batched and bucketed inside).

    Each prediction: index, id, log_odds, p_positive, reasoning (text), reasoning_tokens, reached_marker,
    cut_by_budget, free_answer (1/0 the label written after the marker, -1 none), truncated (prompt tokens
    the task's truncation cut). A non-finite score is an error naming the row, never a prediction.
    """
    for start in range(0, len(rows), chunk):
        part = range(start, min(start + chunk, len(rows)))
        prompts = [encoder.prompt_encoder(rows[i], wheres[i], require_label=False) for i in part]
        gens = sampler.generate([p.tokens.tolist() for p in prompts], max_new_tokens=encoder.max_new_tokens,
                                params=params)
        progress(len(gens))
        done = [encoder.scored(p.tokens.tolist(), g, -1, p.truncated_tokens, wheres[i])
                for i, p, g in zip(part, prompts, gens)]
        scored = scorer.score_all(params, [example for example, _ in done], progress=progress)
        for i, (example, thought), s in zip(part, done, scored):
            if not np.isfinite(s.log_odds):
                raise NonFiniteError(f"{wheres[i]}: the thinking score is {s.log_odds}; the parameters or the "
                                     f"inputs are broken")
            yield dict(index=i, id=rows[i].get("id", i), log_odds=float(s.log_odds), p_positive=float(s.p_positive),
                       reasoning=thought.reasoning, reasoning_tokens=thought.reasoning_tokens,
                       reached_marker=thought.reached_marker, cut_by_budget=thought.cut_by_budget,
                       free_answer=thought.free_answer, truncated=example.truncated_tokens)
