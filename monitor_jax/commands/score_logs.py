"""`score_logs`: Inspect logs (files or folders) scored by the trained monitor, written as copies with its score
on every sample (integrations/inspect_logs.py), for ControlArena's analysis. Transcripts are rendered as the
config's agent source for the task renders them (tool-output limit, reasoning, fence), else with its defaults.

    python -m monitor_jax.main score_logs --config=FILE [--checkpoint=DIR] --task=control_arena \
        --input=logs/ --output=scored/
"""
from __future__ import annotations

import jax

from monitor_jax.errors import EXIT_OK, ConfigError


def run(config, flags) -> int:
    if not (flags.input and flags.output and flags.task):
        raise ConfigError("score_logs needs --task, --input (a log or a folder of logs) and --output (a folder)")
    try:
        from monitor_jax.integrations.inspect_logs import SCORER, score_logs
    except ImportError as e:
        raise ConfigError(f"score_logs needs inspect_ai ({e.name} is missing): pip install -e '.[inspect]'") \
            from None
    from monitor_jax.integrations.monitor import TrainedMonitor

    monitor = TrainedMonitor(config, flags.checkpoint, flags.task)
    counts = score_logs(monitor, flags.input, flags.output)
    if jax.process_index() == 0:
        print(f"scored {counts['samples']} samples of {counts['logs']} logs with {monitor.description} -> "
              f"{flags.output} (score '{SCORER}': P(positive); {counts['truncated']} transcripts truncated to "
              f"{monitor.scorer.max_length} tokens; rendered with {monitor.render})")
    return EXIT_OK
