"""What the eval modes in which the monitor writes first (thinking, summarization) share: the generation prompt.

A row's prompt is its task's prompt with the generation prompt, cut by the task's truncation policy to
`prompt_budget` tokens; the model then writes up to `max_new_tokens`. The task's label tokens are not read
at this point (each mode reads labels after the writing: eval/thinking.py, eval/summarize.py).
"""
from __future__ import annotations

from typing import Any, Mapping

from monitor_jax.data.encode import ClassificationEncoder, Encoded
from monitor_jax.data.tasks import ClassificationTask


class WritingEncoder:
    def __init__(self, task: ClassificationTask, tokenizer, prompt_budget: int, max_new_tokens: int,
                 task_id: int = 0):
        self.prompt_encoder = ClassificationEncoder(task, tokenizer, prompt_budget, task_id, check_labels=False)
        self.max_new_tokens = max_new_tokens

    @property
    def prompt_budget(self) -> int:
        return self.prompt_encoder.max_length

    def __call__(self, row: Mapping[str, Any], where: str = "") -> Encoded:
        """The row's generation prompt (tokens), label and truncation, as an example (not scored as it is)."""
        return self.prompt_encoder(row, where)
