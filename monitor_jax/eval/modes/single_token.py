"""Single-token classification: the monitor is scored at the answer position of the task's prompt."""
from __future__ import annotations

from monitor_jax.data.encode import ClassificationEncoder
from monitor_jax.eval.modes.base import Mode, Scores


class SingleToken(Mode):
    name = "single_token"
    encoder_type = ClassificationEncoder
    legend = "single-token"

    def encoder(self, task, tokenizer, max_length, item, needs):
        return ClassificationEncoder(task, tokenizer, max_length)

    def run(self, params, s, scorer, sampler, progress):
        return Scores.of(scorer.score_all(params, s.examples, progress=progress))
