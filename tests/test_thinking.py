"""Thinking classification: the monitor reasons, then is scored at the answer position after its reasoning."""
import json

import jax
import numpy as np
import pytest
from flax import nnx

from monitor_jax.data import demo, research
from monitor_jax.data.tasks import TaskError
from monitor_jax.eval.evaluator import Evaluator, make_eval_set
from monitor_jax.eval.report import write_report
from monitor_jax.eval.scoring import Scorer
from monitor_jax.eval.thinking import ThinkingEncoder
from monitor_jax.generate import Generation, Sampler
from monitor_jax.model import create_model
from monitor_jax.model.tokenizer import load_tokenizer
from monitor_jax.parallel import make_mesh
from tests.train_helpers import tiny_config

TASK = research.THINKING_TASKS["chem_harm_thinking"]


@pytest.fixture(scope="module")
def tok(demo_tokenizer):
    return load_tokenizer(demo_tokenizer)


def test_scored_example_is_prompt_then_own_reasoning_then_marker(tok):
    enc = ThinkingEncoder(TASK, tok, max_length=256, max_thinking_tokens=32)
    prompt = enc(demo.demo_rows("chem_harm", "test", n=2)[0]).tokens.tolist()
    eos = tok.eos_id
    wrote = tok.encode("The user wants a safe answer.\nAnswer: No")
    example, thought = enc.scored(prompt, Generation(0, wrote + [eos], "stop"), label=0, cut=0)
    before = tok.encode("The user wants a safe answer.\n")
    assert wrote[:len(before)] == before
    assert example.tokens.tolist() == prompt + before + tok.encode("Answer:")
    assert example.label_position == len(example.tokens) - 1 and example.negative_id == tok.encode(" No")[-1]
    assert (thought.reached_marker, thought.cut_by_budget, thought.free_answer) == (True, False, 0)
    assert thought.reasoning == "The user wants a safe answer.\n" and thought.reasoning_tokens == len(before)

    # No marker within the budget: all of it is reasoning, the marker is teacher-forced, the row is counted.
    rambling = tok.encode("The user asks about the lab bench and")
    example, thought = enc.scored(prompt, Generation(1, rambling, "length"), label=1, cut=0)
    assert example.tokens.tolist() == prompt + rambling + tok.encode("Answer:")
    assert (thought.reached_marker, thought.cut_by_budget, thought.free_answer) == (False, True, -1)


def test_a_task_without_marker_cannot_think(tok):
    with pytest.raises(TaskError, match="chem_harm has no answer_marker"):
        ThinkingEncoder(research.TASKS["chem_harm"], tok, max_length=256, max_thinking_tokens=32)
    with pytest.raises(TaskError, match="leaves no room for the prompt"):
        ThinkingEncoder(TASK, tok, max_length=64, max_thinking_tokens=64)


def test_evaluator_scores_after_the_models_own_reasoning(tok, tmp_path):
    """Greedy, so the path is deterministic: each score equals a hand-built single-token scoring of prompt +
    generated reasoning + marker; rows cut by the budget are counted and still scored."""
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    model = create_model(tiny_config(tok.vocab_size), mesh=mesh, seed=3)
    graphdef, params = nnx.split(model)
    rows = demo.demo_rows("chem_harm", "test", n=6)
    enc = ThinkingEncoder(TASK, tok, max_length=256, max_thinking_tokens=12)
    eval_set = make_eval_set("chem_thinking", TASK, True, rows, enc)
    sampler = Sampler(graphdef, model.cfg, tok, mesh, batch_size=4, max_prompt_length=enc.prompt_budget,
                      max_new_tokens=12)
    scorer = Scorer(graphdef, mesh, batch_size=4, buckets=(128, 256), pad_id=tok.pad_id)
    with jax.set_mesh(mesh):
        result = Evaluator([eval_set], scorer, sampler=sampler).run(params)
    t = result.sets[0]
    assert t.mode == "thinking" and t.n == 6
    th = t.extras["thinking"]
    assert th["reached_marker"] + th["cut_by_budget"] <= 6 and th["cut_by_budget"] >= 1   # a random model rambles

    reference = Sampler(nnx.graphdef(model), model.cfg, tok, mesh, max_prompt_length=enc.prompt_budget, max_new_tokens=12, batch_size=4)
    for i, row in enumerate(rows):
        prompt = enc(row).tokens.tolist()
        (gen,) = reference.generate([prompt], params=nnx.state(model))
        ids = gen.ids[:-1] if gen.finish == "stop" else gen.ids
        assert t.scores.extras["reasoning"][i] == tok.decode(ids) or th["reached_marker"]
        full = np.asarray([prompt + ids + tok.encode("Answer:")])
        logits = np.asarray(model(full, np.ones_like(full)))[0, -1]
        expected = logits[enc.positive_id] - logits[enc.negative_id]
        np.testing.assert_allclose(t.scores.log_odds[i], expected, atol=1e-4, err_msg=f"row {i}")

    out = write_report(result, tmp_path / "report")
    assert "Thinking mode" in (out / "report.md").read_text()
    lines = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    assert len(lines) == 6 and all("reasoning" in r and r["free_answer"] in (-1, 0, 1) for r in lines)
    assert json.loads((out / "report.json").read_text())["tasks"][0]["thinking"]["cut_by_budget"] >= 1



def _thinking_config():
    import runpy
    from pathlib import Path

    return runpy.run_path(str(Path(__file__).resolve().parents[1] / "configs/paper/thinking_demo.py"))["get_config"]()


@pytest.mark.parametrize("change, message", [
    (dict(mode="think"), "eval.tasks[1].mode='think'; choose one of ('single_token', 'thinking', 'summarize')"),
    (dict(max_thinking_tokens=0), "eval.tasks[1].max_thinking_tokens=0: thinking mode needs a positive integer"),
    (dict(mode="single_token"), "eval.tasks[1].max_thinking_tokens is set but mode is 'single_token'"),
    (dict(calibration={"kind": "demo", "domain": "chem_harm", "split": "train", "n": 8}),
     "eval.tasks[1]: calibration is not supported in thinking mode"),
])
def test_thinking_items_are_checked_by_key(change, message):
    import re

    from monitor_jax.config import validate
    from monitor_jax.errors import ConfigError

    c = _thinking_config()
    with c.unlocked():
        c.eval.tasks[1] = {**c.eval.tasks[1], **change}
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(c, 8, training=False)


def test_thinking_demo_config_trains_and_reports(tmp_path):
    """configs/paper/thinking_demo.py through the CLI (2 steps, 8-row evals): both modes side by side."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    work = tmp_path / "run"
    out = subprocess.run([sys.executable, "-m", "monitor_jax.main", "train",
                          f"--config={repo / 'configs/paper/thinking_demo.py'}", f"--config.workdir={work}",
                          "--config.train.steps=2", "--config.eval.every=2", "--config.train.checkpoint_every=2",
                          "--config.eval.max_rows=8", "--config.eval.bootstrap=10", "--config.train.batch_size=8",
                          "--config.eval.batch_size=8"],
                         cwd=repo, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "| control_arena_thinking | control_arena | yes | 8 |" in out.stdout
    report = json.loads((work / "eval" / "2" / "report.json").read_text())
    modes = {t["name"]: t["mode"] for t in report["tasks"]}
    assert modes["chem_harm"] == "single_token" and modes["chem_harm_thinking"] == "thinking"
    thinking = report["tasks"][1]["thinking"]
    assert thinking["reached_marker"] + thinking["cut_by_budget"] <= 8
    # The same run evaluates the agent domain by summarization, judged by the base model.
    assert modes["control_arena_summary"] == "summarize" and report["tasks"][6]["judge"] == "base model (random init)"
    assert "Summarization (the monitor summarizes" in (work / "eval" / "2" / "report.md").read_text()
    assert (work / "eval" / "2" / "roc_by_domain.png").stat().st_size > 0
    rows = [json.loads(line) for line in (work / "eval" / "2" / "scores.jsonl").read_text().splitlines()]
    assert sum("summary" in r for r in rows) == 8
    metrics = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/imdb_thinking/mean_reasoning_tokens" in m for m in metrics)


def test_real_checkpoint_thinks_like_transformers(smollm2_dir):
    """SmolLM2-135M-Instruct in thinking mode on demo rows: non-empty reasoning for every row, equal to
    transformers' greedy continuation of the same prompt, and the score after it equal to transformers'
    logits at the last position of the same full sequence."""
    import torch
    import transformers

    from monitor_jax.model import load_hf

    tok = load_tokenizer(smollm2_dir)
    mesh = make_mesh(data=1, devices=jax.devices()[:1])
    model, _ = load_hf(smollm2_dir, mesh=mesh)
    graphdef, params = nnx.split(model)
    enc = ThinkingEncoder(TASK, tok, max_length=256, max_thinking_tokens=40)
    rows = demo.demo_rows("chem_harm", "test", n=4)
    prompts = [enc(r) for r in rows]
    sampler = Sampler(nnx.graphdef(model), model.cfg, tok, mesh, max_prompt_length=enc.prompt_budget, max_new_tokens=40, batch_size=4)
    gens = sampler.generate([p.tokens.tolist() for p in prompts], params=nnx.state(model))
    scored = [enc.scored(p.tokens.tolist(), g, p.label, 0) for p, g in zip(prompts, gens)]
    with jax.set_mesh(mesh):
        scores = Scorer(graphdef, mesh, batch_size=4, buckets=(256,), pad_id=tok.pad_id).score_all(
            params, [e for e, _ in scored])

    hf = transformers.AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    for p, g, (example, thought), s in zip(prompts, gens, scored, scores):
        ids = p.tokens.tolist()
        with torch.no_grad():
            ref = hf.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                              max_new_tokens=40, do_sample=False)[0, len(ids):].tolist()
            logits = hf(torch.tensor([example.tokens.tolist()])).logits[0, -1].numpy()
        assert g.ids == ref
        assert thought.reasoning.strip() and thought.reasoning_tokens > 0
        np.testing.assert_allclose(s.log_odds, logits[enc.positive_id] - logits[enc.negative_id], atol=2e-4)


def test_the_real_paper_config_validates():
    """configs/paper/thinking_real.py (run for docs/benchmarks.md; ~25 min, not in CI) is a valid config."""
    import runpy
    from pathlib import Path

    from monitor_jax.config import validate

    c = runpy.run_path(str(Path(__file__).resolve().parents[1] / "configs/paper/thinking_real.py"))["get_config"]()
    validate(c, 1)
    assert [item.get("mode", "single_token") for item in c.eval.tasks].count("thinking") == 3
