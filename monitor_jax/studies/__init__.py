"""Studies: pipelines of runs over the library (train, eval, generate), each stage's output a file.

    sweep.py       a grid of config overrides -> named runs (ordinary work directories), the local executor,
                   Slurm job-array and Kubernetes Indexed-Job specs (the `sweep` command)
    results.py     a sweep's results: one row per (run, eval set), the table and figures (`report --sweep`)
    elicitation/   unsupervised elicitation: thinking predictions on unlabeled rows -> pseudo-labels ->
                   single-token training -> the comparison report (the `elicit` command runs its stages)
"""
