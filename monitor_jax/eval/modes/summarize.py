"""Summarization transfer: the monitor summarizes each input; a judge scores the summary alone, against the
input's label (the encoder and the judge: eval/summarize.py)."""
from __future__ import annotations

from monitor_jax.errors import ConfigError
from monitor_jax.eval.modes.base import Scores, WritingMode
from monitor_jax.eval.summarize import SummaryEncoder


class Summarize(WritingMode):
    name = "summarize"
    keys = ("max_summary_tokens", "judge_task", "judge")
    budget_key = "max_summary_tokens"
    judged = True
    encoder_type = SummaryEncoder
    legend, line_style, roc_label = "summary judge", ":", " summary judge"

    def check(self, item, where):
        super().check(item, where)
        if not item.get("judge_task"):
            raise ConfigError(f"{where}: summarize mode needs judge_task (the task whose prompt, over {{summary}} "
                              f"alone, the judge answers)")

    def encoder(self, task, tokenizer, max_length, item, needs):
        """The judge: "base" (the model the run started from, the default) or a Hugging Face directory."""
        return SummaryEncoder(task, tokenizer, max_length, needs.task(item["judge_task"]),
                              needs.judge(item.get("judge", "base") or "base"), item["max_summary_tokens"])

    def labels(self, s):
        return s.encoder.judge_task.positive, s.encoder.judge_task.negative

    def run(self, params, s, scorer, sampler, progress):
        """The judge's scores (its own parameters and scorer) over each row's summary alone, in row order."""
        summaries = [sampler.text(g) for g in self.write(params, s, sampler, progress)]
        examples = [s.encoder.judged(text, ex.label, f"{s.name} row {i}")
                    for i, (text, ex) in enumerate(zip(summaries, s.examples))]
        judge = s.encoder.judge
        return Scores.of(judge.scorer.score_all(judge.params, examples, progress=progress),
                         extras=dict(judge=judge.description, judge_task=s.encoder.judge_task.name,
                                     judge_truncated=sum(ex.truncated for ex in examples)),
                         row_extras=dict(summary=summaries))

    def report_lines(self, sets):
        return ["", "Summarization (the monitor summarizes each input; the judge scores the summary alone, against "
                "the input's label):", "", "| eval set | n | judge | judge task | summaries cut to fit the judge |",
                "| --- | --- | --- | --- | --- |"] + [
            f"| {s.name} | {s.n} | {s.extras['judge']} | {s.extras['judge_task']} | {s.extras['judge_truncated']} |"
            for s in sets]
