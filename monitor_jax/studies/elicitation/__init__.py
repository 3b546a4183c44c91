"""Unsupervised elicitation: the starting model's thinking predictions on unlabeled rows become pseudo-labels
for ordinary single-token training (`python -m monitor_jax.main elicit`; commands/elicit.py runs the stages).

    predict.py        thinking predictions (reasoning, log-odds after it) of rows whose labels were removed
    pseudo_labels.py  hard labels from the log-odds sign, an optional confidence filter, the class balance
    stages.py         each stage's output is a file; a stage is done when its inputs' fingerprint matches
    compare.py        the comparison report: zero-shot single-token and thinking, elicited, supervised
"""
