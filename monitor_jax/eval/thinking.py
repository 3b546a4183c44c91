"""Thinking classification: the monitor reasons first, then is scored at the answer position after its reasoning.

For each row: the task's prompt (which asks for reasoning, then the answer marker and the label) goes to the
sampler, which writes until an end-of-turn id or `max_thinking_tokens`. The reasoning is what it wrote before
the answer marker (all of it when it never wrote one). The scored example is

    prompt ids + the model's own reasoning ids + the marker (the model's own tokens when it wrote it cleanly,
    else the marker's tokens, teacher-forced)

and the score is logit(positive) − logit(negative) at its last position, by the ordinary scorer. What the
model wrote after the marker, when it did, is its free-text answer; the report compares it with the score.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from monitor_jax.data.encode import Encoded, HasLabelIds, classification_example
from monitor_jax.data.tasks import ClassificationTask, TaskError, resolve_label_ids
from monitor_jax.eval.writing import WritingEncoder
from monitor_jax.generate.sampler import Generation
from monitor_jax.model.tokenizer import untrusted

# Tokens kept free in the largest scoring bucket beyond prompt + reasoning + marker: a marker re-tokenised
# after the reasoning may take a token more than alone.
SLACK_TOKENS = 4


@dataclasses.dataclass
class Thought:
    reasoning: str            # what the model wrote before the answer marker
    reasoning_tokens: int     # its length in tokens
    reached_marker: bool      # the model wrote the marker itself
    cut_by_budget: bool       # neither the marker nor an end of turn within max_thinking_tokens
    free_answer: int          # after the marker it wrote: 1 the positive label, 0 the negative, -1 neither/none


class ThinkingEncoder(WritingEncoder, HasLabelIds):
    """The generation prompt of a row, and its scored example once the model has reasoned."""

    def __init__(self, task: ClassificationTask, tokenizer, max_length: int, max_thinking_tokens: int,
                 task_id: int = 0):
        if not task.answer_marker:
            raise TaskError(f"task {task.name} has no answer_marker, so it cannot run in thinking mode (the "
                            f"marker, e.g. 'Answer:', is where the label is read after the reasoning)")
        self.task, self.tok = task, tokenizer
        self.marker_ids = tokenizer.encode(task.answer_marker)
        self.max_length = max_length
        prompt_budget = max_length - max_thinking_tokens - len(self.marker_ids) - SLACK_TOKENS
        if prompt_budget <= 0:
            raise TaskError(f"task {task.name}: max_thinking_tokens={max_thinking_tokens} leaves no room for the "
                            f"prompt in the largest eval bucket ({max_length} tokens); raise eval.buckets")
        # The prompt is encoded (and cut by the task's truncation policy) to leave room for the reasoning.
        super().__init__(dataclasses.replace(task, answer_prefix=""), tokenizer, prompt_budget, max_thinking_tokens,
                         task_id)
        self.label_ids = resolve_label_ids(task, tokenizer, after_marker=True)   # read right after the marker
        self.task_id = task_id

    def scored(self, prompt_ids: list[int], generation: Generation, label: int, cut: int,
               where: str = "") -> tuple[Encoded, Thought]:
        tok, marker = self.tok, self.task.answer_marker
        ids = generation.reply_ids
        text = tok.decode(ids)
        at = text.find(marker)
        if at < 0:
            reasoning_ids, forced = list(ids), self.marker_ids
            reasoning, free = text, -1
        else:
            # The longest run of the model's own tokens that stays before the marker; the text between it and
            # the marker (usually nothing) is re-encoded with the marker.
            k = 0
            while k < len(ids) and len(tok.decode(ids[:k + 1])) <= at:
                k += 1
            reasoning_ids, reasoning = list(ids[:k]), text[:at]
            forced = tok.encode(untrusted(text[len(tok.decode(ids[:k])):at]) + marker)   # the model's text
            after = text[at + len(marker):].strip()
            free = (1 if after.startswith(self.task.positive.strip()) else
                    0 if after.startswith(self.task.negative.strip()) else -1)
        tokens = list(prompt_ids) + reasoning_ids + forced
        if len(tokens) > self.max_length:   # never cut: the budget arithmetic above should make this impossible
            raise TaskError(f"task {self.task.name}: row {where} is {len(tokens)} tokens after its reasoning, more "
                            f"than the largest eval bucket ({self.max_length}); raise eval.buckets")
        example = classification_example(tokens, label, self.label_ids, self.task_id, cut)
        thought = Thought(reasoning, len(reasoning_ids), reached_marker=at >= 0,
                          cut_by_budget=at < 0 and generation.finish == "length", free_answer=free)
        return example, thought


def thinking_summary(thoughts: list[Thought], log_odds: np.ndarray) -> dict[str, float]:
    """What the report adds for a thinking set: how the reasoning ended, its length, and whether the free-text
    answer agrees with the score's sign (over the rows that wrote one of the two labels after the marker)."""
    answered = [(t.free_answer, s) for t, s in zip(thoughts, log_odds) if t.free_answer >= 0]
    return dict(reached_marker=sum(t.reached_marker for t in thoughts),
                cut_by_budget=sum(t.cut_by_budget for t in thoughts),
                mean_reasoning_tokens=float(np.mean([t.reasoning_tokens for t in thoughts])),
                answered=len(answered),
                answer_agreement=(float(np.mean([(a == 1) == (s > 0) for a, s in answered])) if answered
                                  else float("nan")))
