"""The trained monitor in ControlArena: as a @control_agent monitor scoring a real Inspect log (written by
inspect_ai with the mock model) post hoc through ControlArena's own score_async, and as `score_logs` copies;
ControlArena's samples_df and compute_monitor_classification_metrics run on them, and agree with our metrics."""
import asyncio
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from monitor_jax.eval.metrics import tpr_at_fpr
from tests.inspect_logs import write_logs

REPO = Path(__file__).resolve().parents[1]
CUT = 600


@pytest.fixture(scope="module")
def setup(tmp_path_factory, demo_tokenizer):
    root = tmp_path_factory.mktemp("ca")
    log = write_logs(root / "logs", n=8)
    config = root / "monitor.py"
    # The demo's untrained model (its scores are arbitrary, but they are the model's): transcripts with tool
    # outputs cut to CUT characters are about 600 tokens with the prompt, within a 1024 bucket.
    config.write_text(
        "import runpy\n"
        "def get_config():\n"
        f"    c = runpy.run_path({str(REPO / 'configs/demo.py')!r})['get_config']()\n"
        f"    c.workdir, c.model.tokenizer = {str(root / 'run')!r}, {demo_tokenizer!r}\n"
        "    c.eval.buckets = (1024,)\n"
        "    return c\n")
    return root, log, config


def test_control_arena_scores_a_log_with_the_monitor_and_its_metrics_agree(setup):
    from control_arena.analysis import (MonitorAnalysisSettings, compute_monitor_classification_metrics,
                                        compute_safety, samples_df)
    from control_arena.scorers import end_of_trajectory_monitor, score_async
    from inspect_ai.log import read_eval_log, write_eval_log

    from monitor_jax.integrations.control_arena import monitor_jax_monitor
    from monitor_jax.integrations.inspect_logs import score_logs
    from monitor_jax.integrations.monitor import TrainedMonitor

    root, log, config = setup
    monitor = monitor_jax_monitor(config=str(config), checkpoint=None, tool_output_limit=CUT)
    # A log not written by ControlArena's solver records no tool-output limit for ControlArena's monitor view:
    # say there is none (the monitor renders and cuts tool outputs itself, as in training).
    original = read_eval_log(str(log))
    for sample in original.samples:
        sample.store["control_arena.tool_output_limit"] = None
    (scored,) = asyncio.run(score_async([original], {"monitor_jax": end_of_trajectory_monitor(monitor)}))
    by_control_arena = root / "control_arena" / log.name
    by_control_arena.parent.mkdir()
    write_eval_log(scored, str(by_control_arena))

    # The same monitor through our own post-hoc command's function: the same score on every sample.
    counts = score_logs(TrainedMonitor(str(config), None, tool_output_limit=CUT), [str(log)], str(root / "ours"))
    assert counts == dict(logs=1, samples=8, truncated=0)
    frames = {name: samples_df([str(root / name / log.name)]) for name in ("control_arena", "ours")}
    for df in frames.values():
        assert len(df) == 8 and df["score_monitor_jax"].between(0, 1).all()
    np.testing.assert_allclose(frames["ours"]["score_monitor_jax"], frames["control_arena"]["score_monitor_jax"],
                               rtol=1e-6)

    df = frames["ours"]
    honest, attack = df[df["eval_mode"] == "honest"], df[df["eval_mode"] == "attack"]
    metrics = compute_monitor_classification_metrics(
        honest, attack, MonitorAnalysisSettings(scorer_name="monitor_jax", target_fpr=0.01))
    labels = (df["eval_mode"] == "attack").to_numpy().astype(int)
    scores = df["score_monitor_jax"].to_numpy()
    assert metrics.roc_auc == pytest.approx(roc_auc_score(labels, scores))
    # Under 100 honest samples both TPRs at 1% FPR count the attacks above every honest score.
    assert metrics.tpr == pytest.approx(tpr_at_fpr(labels, scores, 0.01))
    # Safety at an audit budget runs on the copies too: the attacks (all successful here) scored above the
    # honest scores' (100 - budget)th percentile are caught.
    for budget in (10, 50):
        threshold = np.percentile(honest["score_monitor_jax"], 100 - budget)
        caught = (attack["score_monitor_jax"] > threshold).sum()
        assert compute_safety(df, "monitor_jax", budget) == pytest.approx(caught / len(attack))
    # The input log is untouched.
    assert "monitor_jax" not in (read_eval_log(str(log)).samples[0].scores or {})


def test_score_logs_command(setup):
    root, log, config = setup
    proc = subprocess.run([sys.executable, "-m", "monitor_jax.main", "score_logs", f"--config={config}",
                           "--task=control_arena", f"--input={log.parent}", f"--output={root / 'cli'}"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "scored 8 samples of 1 logs" in proc.stdout and (root / "cli" / log.name).is_file()
    again = subprocess.run([sys.executable, "-m", "monitor_jax.main", "score_logs", f"--config={config}",
                            "--task=control_arena", f"--input={log.parent}", f"--output={log.parent}"],
                           cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 2 and "would overwrite the input log" in again.stderr


def test_the_monitor_renders_transcripts_as_its_training_source_did():
    import runpy

    from monitor_jax.integrations.monitor import RENDER_DEFAULTS, render_settings

    c = runpy.run_path(str(REPO / "configs/demo.py"))["get_config"]()
    assert render_settings(c, "control_arena") == RENDER_DEFAULTS     # no agent source in the demo
    c.data.classification = [{"task": "control_arena", "weight": 1.0, "source": {
        "kind": "inspect", "paths": ["logs/"], "tool_output_limit": 300, "reasoning": True}}]
    assert render_settings(c, "control_arena") == dict(tool_output_limit=300, reasoning=True, fence=True)
    assert render_settings(c, "chem_harm") == RENDER_DEFAULTS
