"""The project's error classes and the CLI's exit codes.

Every error a user can cause (a config key, a data row, a task, a checkpoint)
is a `MonitorError`: the CLI prints its message as one line and exits with
`EXIT_USER_ERROR`; the traceback is shown only with `--debug` (or
MONITOR_JAX_DEBUG=1). Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_USER_ERROR = 2          # bad config, data, task or checkpoint: fix the input, do not retry
EXIT_PREEMPTED = 75          # EX_TEMPFAIL: saved after SIGTERM/SIGINT; restart the same command to resume


class MonitorError(Exception):
    """An error in the user's input; the message says what, where and how to fix it."""


class ConfigError(MonitorError, ValueError):
    """A config value (or command-line flag) is invalid; the message names the key."""


class DataError(MonitorError, ValueError):
    """A data file or data config is wrong; the message says where (file and line) and how."""


class TaskError(MonitorError, ValueError):
    """A task is misconfigured for its tokenizer or its rows."""


class CheckpointError(MonitorError, ValueError):
    """A checkpoint (orbax or Hugging Face) is missing, corrupt or does not fit the model."""


class MetricError(MonitorError, ValueError):
    """Metrics cannot be computed from these labels and scores (e.g. one class only)."""


class NonFiniteError(MonitorError, RuntimeError):
    """A loss, gradient or score became NaN or Inf; the message names the step or the row."""


def first_line(e: BaseException, limit: int = 300) -> str:
    """A foreign exception's first line (its type when it has no message), for a one-line error."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:limit]
