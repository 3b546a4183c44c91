"""Unsupervised elicitation: the starting model's thinking predictions on unlabeled rows become pseudo-labels
for ordinary single-token training (`python -m monitor_jax.main elicit`; studies/pipeline.py runs the stages).

    pipeline.py       the stages (inputs, outputs, the config keys each reads) and the functions that run them
    predict.py        thinking predictions (reasoning, log-odds after it) of rows whose labels were removed
    pseudo_labels.py  hard labels from the log-odds sign, an optional confidence filter, the class balance
    compare.py        the comparison report: zero-shot single-token and thinking, elicited, supervised
"""
import dataclasses

from monitor_jax.settings import setting


@dataclasses.dataclass(frozen=True)
class ElicitConfig:
    """The `elicit` config section (the `elicit` command)."""
    source: dict = setting({}, "the unlabeled rows (a source spec); label fields are removed as rows are read",
                           check=False)
    thinking_task: str = setting("", "the prompt the starting model reasons under (a task with an answer_marker)")
    task: str = setting("", "the single-token task trained on the pseudo-labels (its label_field is written)")
    max_thinking_tokens: int = setting(128, "reasoning tokens generated at most", low=1)
    max_rows: int = setting(0, "the first N rows of the source (0 = all)", low=0)
    keep_quantile: float = setting(0.0, "drop the least confident share: keep |log-odds| >= this quantile "
                                   "(0 = keep all)", low=0.0, high=1.0)
    supervised: bool = setting(True, "also train on the same rows' true labels, when the source has them "
                               "(a ceiling)")
