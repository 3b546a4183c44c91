"""Studies: pipelines of runs over the library (train, eval, generate), each stage's output a file.

    elicitation/   unsupervised elicitation: thinking predictions on unlabeled rows -> pseudo-labels ->
                   single-token training -> the comparison report (the `elicit` command runs its stages)
"""
