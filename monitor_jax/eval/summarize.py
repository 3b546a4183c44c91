"""Summarization transfer: the monitor summarizes each input; a judge reads only the summary and answers.

The evaluated model writes a summary under the summarizer task's prompt (greedy, up to max_summary_tokens).
The judge, a separate checkpoint (by default the base model the run started from), scores the judge task's
prompt, whose only field is `summary`, with the ordinary single-token scorer: the AUROC is that of the
judge's log-odds against the *input's* true label. The judge never sees the input: its rows hold the summary
and the label, nothing else, and a judge prompt that names any other field is refused before generation.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from monitor_jax.data.encode import ClassificationEncoder, Encoded
from monitor_jax.data.tasks import ClassificationTask, TaskError
from monitor_jax.eval.scoring import Scorer
from monitor_jax.eval.writing import WritingEncoder

SUMMARY_FIELD = "summary"


@dataclasses.dataclass
class Judge:
    """A checkpoint that scores summaries: its own parameters, scorer and tokenizer."""
    params: Any
    scorer: Scorer
    tokenizer: Any
    description: str


class SummaryEncoder(WritingEncoder):
    """The summarizer's prompt for a row, and the judge's example for the summary it wrote."""

    def __init__(self, task: ClassificationTask, tokenizer, max_prompt_length: int, judge_task: ClassificationTask,
                 judge: Judge, max_summary_tokens: int, task_id: int = 0):
        if judge_task.fields != [SUMMARY_FIELD]:
            raise TaskError(f"judge task {judge_task.name}: its prompt must use exactly the field "
                            f"{{{SUMMARY_FIELD}}} (the judge sees only the summary), not {judge_task.fields}")
        if judge_task.content_field != SUMMARY_FIELD:
            judge_task = dataclasses.replace(judge_task, content_field=SUMMARY_FIELD)   # cut the summary if long
        self.task, self.judge_task, self.judge = task, judge_task, judge
        # The summarizer's labels are never read as tokens: only the row's label is kept, for the judge's AUROC.
        super().__init__(task, tokenizer, max_prompt_length, max_summary_tokens, task_id)
        # The judge's labels must be single tokens in the judge's tokenizer: checked here, before generation.
        self.judge_encoder = ClassificationEncoder(judge_task, judge.tokenizer, judge.scorer.max_length, task_id)

    def judged(self, summary: str, label: int, where: str = "") -> Encoded:
        """The judge's example: its prompt over the summary alone, with the input's label."""
        row = {SUMMARY_FIELD: summary, self.judge_task.label_field: bool(label)}
        return self.judge_encoder(row, where)
