"""Where monitors live: the trained monitor loaded once and used from other tools.

    monitor.py          TrainedMonitor: a run's config and checkpoint (or an exported Hugging Face directory)
                        loaded once; renders agent transcripts (data/transcripts.py) and scores them with the
                        jitted scorer (log-odds, P(positive))
    control_arena.py    `monitor_jax_monitor`, a ControlArena @control_agent monitor (registered through the
                        `control_arena` entry-point group) returning MonitorResponse(suspicion_score=P(positive))
    inspect_logs.py     Inspect logs scored post hoc: copies with the monitor's score on every sample, which
                        ControlArena's samples_df / compute_monitor_classification_metrics / compute_safety read

control_arena.py and inspect_logs.py need `pip install -e '.[inspect]'`; monitor.py does not.
"""
