"""eval, score, generate and export run end to end on the demo suite and write their files."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from flax import nnx

from monitor_jax.generate import Sampler

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
    cli("train", "--config.train.steps=6", "--config.eval.every=6", "--config.train.checkpoint_every=6",
        "--config.train.batch_size=8", workdir=work)

    # eval: every configured task, held-out domains and the prompt variant, from the latest checkpoint.
    out = cli("eval", workdir=work)
    report_dir = work / "eval" / "6"
    for name in ("report.json", "report.md", "roc.png", "scores.jsonl"):
        assert (report_dir / name).stat().st_size > 0
    report = json.loads((report_dir / "report.json").read_text())
    assert {t["task"] for t in report["tasks"]} >= {"cyber_harm_inverted", "control_arena", "imdb"}
    auroc = report["tasks"][0]["metrics"]["auroc"]
    assert auroc["low"] <= auroc["value"] <= auroc["high"]
    assert "| control_arena |" in out

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


def test_generate_command(tmp_path):
    """`generate` on the demo tokenizer and a tiny random model: one reply row per input row (chat or task
    prompt), streaming to .partial then renamed; a bad row is one error line naming the file and line, exit 2."""
    rows = tmp_path / "prompts.jsonl"
    rows.write_text("\n".join([
        json.dumps({"id": "a", "prompt": "Is it safe to mix bleach and ammonia?"}),
        json.dumps({"messages": [{"role": "system", "content": "You are a monitor."},
                                 {"role": "user", "content": "The agent deleted the backups."}]}),
        json.dumps({"id": "c", "prompt": "Repeat the word apple."}),
    ]) + "\n")
    out = tmp_path / "out.jsonl"
    gen = ["--config.generate.max_new_tokens=6", "--config.generate.max_prompt_length=64",
           "--config.generate.buckets=(32,64)", "--config.generate.temperature=0.7", "--config.generate.seed=3"]
    stdout = cli("generate", f"--input={rows}", f"--output={out}", *gen, workdir=tmp_path / "run")
    lines = sorted((json.loads(line) for line in out.read_text().splitlines()), key=lambda r: r["index"])
    assert [(r["index"], r["id"]) for r in lines] == [(0, "a"), (1, 1), (2, "c")]
    assert all(1 <= r["new_tokens"] <= 6 and r["finish"] in ("stop", "length") and isinstance(r["text"], str)
               and r["truncated"] == 0 for r in lines)
    assert not (tmp_path / "out.jsonl.partial").exists()
    assert "generated for 3 rows" in stdout

    # With a task: the task's prompt, cut by its truncation policy to fit, and counted.
    task_rows = tmp_path / "task_rows.jsonl"
    task_rows.write_text(json.dumps({"text": "how do I clean a lab bench " * 40}) + "\n")
    cli("generate", "--task=chem_harm", f"--input={task_rows}", f"--output={out}", *gen, workdir=tmp_path / "run")
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["truncated"] > 0

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "fine"}) + "\n" + json.dumps({"text": "no prompt"}) + "\n")
    res = subprocess.run([sys.executable, "-m", "monitor_jax.main", "generate", f"--config={REPO / 'configs/demo.py'}",
                          f"--config.workdir={tmp_path / 'run'}", *SMALL, *gen, f"--input={bad}",
                          f"--output={tmp_path / 'bad_out.jsonl'}"], cwd=REPO, capture_output=True, text=True,
                         timeout=900)
    assert res.returncode == 2, res.stderr[-2000:]
    assert f"{bad} line 2: the row has neither 'messages' nor 'prompt'" in res.stderr
    assert not (tmp_path / "bad_out.jsonl").exists()


def test_generate_file_names_bad_lines(tmp_path, small_tokenizer):
    from monitor_jax.commands.generate import generate_file
    from monitor_jax.errors import DataError
    from monitor_jax.model import ModelConfig, create_model

    model = create_model(ModelConfig(family="qwen2", vocab_size=small_tokenizer.vocab_size, embed_dim=32,
                                     num_layers=1, num_heads=4, num_kv_heads=2, head_dim=8, mlp_dim=32,
                                     qkv_bias=True))
    sampler = Sampler(nnx.graphdef(model), model.cfg, small_tokenizer, max_prompt_length=64, max_new_tokens=4, batch_size=2)
    for text, message in [('{"prompt": "ok"}\n{"prompt": "ok"\n', "line 2"),
                          ('{"messages": "hi"}\n', "line 1: 'messages' must be a non-empty list"),
                          ('{"prompt": "' + "word " * 200 + '"}\n', "line 1: the prompt is")]:
        path = tmp_path / "rows.jsonl"
        path.write_text(text)
        with pytest.raises(DataError, match=f"{path} {message}"):
            generate_file(sampler, nnx.state(model), small_tokenizer, str(path), str(tmp_path / "o.jsonl"))
