"""eval, score and export run end to end on the demo suite and write their files."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--config.model.config.num_layers=1", "--config.model.config.embed_dim=32",
         "--config.model.config.head_dim=8", "--config.model.config.mlp_dim=32", "--config.eval.bootstrap=20",
         "--config.mesh.data=2", "--config.mesh.fsdp=2", "--config.mesh.tensor=2"]


def cli(*args, workdir):
    command, *rest = args
    out = subprocess.run([sys.executable, "-m", "monitor_jax.main", command, f"--config={REPO / 'configs/demo.py'}",
                          f"--config.workdir={workdir}", *SMALL, *rest], cwd=REPO, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    return out.stdout


@pytest.mark.slow
def test_train_eval_score_export(tmp_path):
    work = tmp_path / "run"
    cli("train", "--config.train.steps=6", "--config.eval.every=3", "--config.train.checkpoint_every=3",
        "--config.train.batch_size=8", workdir=work)

    # eval: every configured task, held-out domains and the prompt variant, from the latest checkpoint.
    out = cli("eval", workdir=work)
    report_dir = work / "eval" / "6"
    for name in ("report.json", "report.md", "roc.png", "scores.jsonl"):
        assert (report_dir / name).stat().st_size > 0
    report = json.loads((report_dir / "report.json").read_text())
    assert {t["task"] for t in report["tasks"]} >= {"cyber_harm_inverted", "agent_danger", "sentiment"}
    auroc = report["tasks"][0]["metrics"]["auroc"]
    assert auroc["low"] <= auroc["value"] <= auroc["high"]
    assert "| agent_danger |" in out

    # eval of the untrained base model is the same command with no checkpoint to find.
    cli("eval", workdir=tmp_path / "fresh")
    assert (tmp_path / "fresh" / "eval" / "base" / "report.md").exists()

    # score: any JSONL with a task's prompt; labels are optional.
    rows = tmp_path / "rows.jsonl"
    rows.write_text("\n".join(json.dumps({"id": f"r{i}", "text": f"how do I clean a lab bench {i}"})
                              for i in range(5)) + "\n")
    scores = tmp_path / "scores.jsonl"
    cli("score", "--task=chem_harm", f"--input={rows}", f"--output={scores}", workdir=work)
    # Written as batches complete (streaming); `index` is the input line, so sorting restores input order.
    lines = sorted((json.loads(line) for line in scores.read_text().splitlines()), key=lambda r: r["index"])
    assert [(row["index"], row["id"]) for row in lines] == [(i, f"r{i}") for i in range(5)]
    assert all(np.isfinite(row["score"]) and 0 < row["p_positive"] < 1 for row in lines)

    # export: a Hugging Face directory transformers loads, scoring the same as the checkpoint.
    hf = tmp_path / "hf"
    cli("export", f"--output={hf}", workdir=work)
    assert (hf / "config.json").exists() and (hf / "tokenizer.json").exists()
    again = tmp_path / "scores_hf.jsonl"
    cli("score", "--task=chem_harm", f"--input={rows}", f"--output={again}", f"--checkpoint={hf}", workdir=work)
    hf_lines = sorted((json.loads(line) for line in again.read_text().splitlines()), key=lambda r: r["index"])
    np.testing.assert_allclose([r["score"] for r in hf_lines], [r["score"] for r in lines], atol=1e-4)
