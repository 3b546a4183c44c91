"""Scripts that print the tables of docs/benchmarks.md. Run each from the repository root as a module:

    python -m benchmarks.NAME [--help]

Their shared helpers are in `benchmarks/common.py`.
"""
