"""Thinking classification: the monitor reasons first, then is scored at the answer position after its
reasoning (the encoder, the reasoning's bookkeeping and its summary: eval/thinking.py)."""
from __future__ import annotations

import numpy as np

from monitor_jax.eval.modes.base import Scores, WritingMode
from monitor_jax.eval.thinking import ThinkingEncoder, thinking_summary


class Thinking(WritingMode):
    name = "thinking"
    keys = ("max_thinking_tokens",)
    budget_key = "max_thinking_tokens"
    encoder_type = ThinkingEncoder
    legend, line_style, roc_label = "thinking", "--", " thinking"

    def encoder(self, task, tokenizer, max_length, item, needs):
        return ThinkingEncoder(task, tokenizer, max_length, item["max_thinking_tokens"])

    def run(self, params, s, scorer, sampler, progress):
        """Each row scored after its own reasoning (in row order)."""
        done = [s.encoder.scored(ex.tokens.tolist(), g, ex.label, ex.truncated_tokens, f"{s.name} row {i}")
                for i, (g, ex) in enumerate(zip(self.write(params, s, sampler, progress), s.examples))]
        thoughts = [t for _, t in done]
        scores = Scores.of(scorer.score_all(params, [e for e, _ in done], progress=progress))
        summary = thinking_summary(thoughts, scores.log_odds)
        scores.extras = dict(thinking=summary)
        scores.row_extras = dict(reasoning=[t.reasoning for t in thoughts],
                                 free_answer=[t.free_answer for t in thoughts])
        # answer_agreement is undefined (NaN) when no row wrote a label: left out, never logged as NaN
        scores.metrics = {k: v for k, v in summary.items() if np.isfinite(v)}
        return scores

    def report_lines(self, sets):
        lines = ["", "Thinking mode (the monitor reasons, then is scored at the answer position after its reasoning):",
                 "", "| eval set | n | reached the marker | cut by the budget | mean reasoning tokens | "
                 "wrote a label after the marker | free-text answer agrees with the score |",
                 "| --- | --- | --- | --- | --- | --- | --- |"]
        for s in sets:
            th = s.extras["thinking"]
            agree = f"{th['answer_agreement']:.3f}" if np.isfinite(th["answer_agreement"]) else "-"
            lines.append(f"| {s.name} | {s.n} | {th['reached_marker']} | {th['cut_by_budget']} | "
                         f"{th['mean_reasoning_tokens']:.1f} | {th['answered']} | {agree} |")
        return lines
