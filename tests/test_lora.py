"""LoRA: adapters only are trained, the base never moves, exports load in transformers and peft, PEFT adapters
import, LoRA checkpoints hold adapters and the base's fingerprint."""
import json
import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from monitor_jax.errors import CheckpointError, ConfigError
from monitor_jax.model import create_model, load_hf, lora, save_hf
from monitor_jax.parallel import make_mesh
from monitor_jax.parallel.sharding import logical_to_spec
from monitor_jax.train.step import LossConfig, frozen_params, init_state, jit_train_step, make_train_step
from tests.hf_models import FAMILIES, hf_logits, padded_batch
from tests.train_helpers import batches, run_config, tiny_config

RULES = lora.DEFAULT_TARGETS.split()


def _adapt(model, rank=4, alpha=8.0, rules=RULES, **kw):
    modules, matches = lora.select(model, rules)
    return lora.add_adapters(model, modules, rank, alpha, **kw), matches


def _randomise_b(model, seed=1, std=0.2):
    """A trained adapter's B is not zero: give every B random values (on its own sharding)."""
    for i, ad in enumerate(lora.adapted(model).values()):
        noise = jax.random.normal(jax.random.key(seed + i), ad.b.shape) * std
        ad.b.set_value(jax.device_put(noise.astype(ad.b[...].dtype), ad.b[...].sharding))


def test_targets_name_what_they_match_and_a_rule_matching_nothing_is_an_error(small_tokenizer):
    model = create_model(tiny_config(small_tokenizer.vocab_size))
    with pytest.raises(ConfigError, match=re.escape(
            "lora.targets: the rule 'attn\\\\.qkv_proj' matches no module; module paths look like 'layers.0.attn.k_proj' "
            "(14 projections, named down_proj, gate_proj, k_proj, o_proj, q_proj, up_proj, v_proj)")):
        lora.match(model, [r"attn\.qkv_proj"])
    with pytest.raises(ConfigError, match="is not a regular expression"):
        lora.match(model, ["(unclosed"])
    info, matches = _adapt(model, rank=2, rules=[r"layers\.1\.attn\.[qv]_proj$", r"down_proj"])
    assert sorted(info.modules) == ["layers.0.mlp.down_proj", "layers.1.attn.q_proj", "layers.1.attn.v_proj",
                                    "layers.1.mlp.down_proj"]
    lines = lora.summary(matches, model)
    # q: A [32, 2] + B [2, 4, 8]; v: A [32, 2] + B [2, 2, 8]; down: A [64, 2] + B [2, 32], twice.
    assert lines == ["lora: rule 'layers\\\\.1\\\\.attn\\\\.[qv]_proj$' matched 2 module(s), 224 adapter parameters",
                     "lora: rule 'down_proj' matched 2 module(s), 384 adapter parameters"]
    # The norms, the embedding and the unembedding are never candidates.
    assert all(p.split(".")[-1].endswith("_proj") for p in lora.projections(model))


def _train(tok, mesh, steps=3, **model_kw):
    model = create_model(tiny_config(tok.vocab_size, **model_kw), mesh=mesh)
    base_logits = model(jnp.asarray(np.arange(24).reshape(2, 12) % tok.vocab_size))
    _adapt(model, seed=3, mesh=mesh)
    init_logits = model(jnp.asarray(np.arange(24).reshape(2, 12) % tok.vocab_size))
    optimizer = optax.adamw(1e-2)
    frozen = frozen_params(model, lora.TRAINABLE)
    before = jax.tree.map(np.asarray, jax.device_get(frozen))
    state = init_state(model, optimizer, mesh, lora.TRAINABLE)
    step = make_train_step(nnx.graphdef(model), optimizer, LossConfig(chunk_size=16), optax.constant_schedule(1.0),
                           optax.constant_schedule(1.0))
    data = list(batches(tok, steps=steps))
    with jax.set_mesh(mesh):
        jitted = jit_train_step(step, state, mesh, data[0], model.cfg.sharding_rules, frozen)
        for s in range(steps):
            state, metrics = jitted(state, dict(data[s]), frozen)
    return model, state, frozen, before, metrics, (base_logits, init_logits), jitted


def test_lora_trains_the_adapters_only_on_their_base_shardings_and_sharded_equals_one_device(small_tokenizer):
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    model, state, frozen, before, metrics, (base, init), jitted = _train(small_tokenizer, mesh)
    assert jitted._cache_size() == 1
    np.testing.assert_array_equal(np.asarray(init), np.asarray(base))       # B = 0: the base model's logits
    # The base weights are bitwise unchanged, and not copied: the step reads the same buffers.
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b), jax.device_get(frozen), before)
    # The state holds the adapters only; the optimiser holds their two Adam moments and a count, nothing else.
    adapter_leaves = jax.tree.leaves(state.params)
    assert len(adapter_leaves) == 2 * 14 and all(x.ndim >= 2 for x in adapter_leaves)
    adapter_bytes = sum(x.nbytes for x in adapter_leaves)
    moments = [x for x in jax.tree.leaves(state.opt_state) if x.ndim >= 2]
    assert len(moments) == 2 * len(adapter_leaves) and sum(x.nbytes for x in moments) == 2 * adapter_bytes
    assert sum(x.nbytes for x in jax.tree.leaves(state.opt_state)) - 2 * adapter_bytes <= 16   # the step count
    assert sum(x.nbytes for x in jax.tree.leaves(frozen)) > 10 * adapter_bytes
    assert float(metrics["grad_norm"]) > 0
    # Each adapter is sharded like its base weight, the rank axis unsharded.
    q = lora.adapted(nnx.merge(nnx.graphdef(model), frozen, state.params))["layers.0.attn.q_proj"]
    rules = model.cfg.sharding_rules
    assert q.a[...].sharding.spec == logical_to_spec(("embed", None), rules, q.a.shape, mesh)
    assert q.b[...].sharding.spec == logical_to_spec((None, "heads", "head_dim"), rules, q.b.shape, mesh)
    assert q.a[...].sharding.spec[0] == "fsdp" and q.b[...].sharding.spec[1] == "tensor"

    single = _train(small_tokenizer, make_mesh(data=1, fsdp=1, tensor=1, devices=jax.devices()[:1]))[1]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-6),
                 jax.device_get(state.params), jax.device_get(single.params))


def test_lora_step_under_remat_equals_the_step_without(small_tokenizer):
    """Rematerialised layers (what a LoRA run at scale needs) with the frozen base and the trained adapters merged
    from two trace levels: nnx.remat refused to trace it ("Cannot mutate Param from a different trace level");
    the layer is now a jax.checkpoint of a pure function and computes the same step."""
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    plain, plain_metrics = _train(small_tokenizer, mesh)[1::3]
    remat, remat_metrics = _train(small_tokenizer, mesh, remat="full")[1::3]
    np.testing.assert_allclose(float(plain_metrics["loss"]), float(remat_metrics["loss"]), rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-6),
                 jax.device_get(plain.params), jax.device_get(remat.params))


def _torch_logits(model, tokens, mask):
    import torch

    with torch.no_grad():
        return model(torch.tensor(tokens), attention_mask=torch.tensor(mask)).logits.float().numpy()


@pytest.mark.parametrize("family", FAMILIES)
def test_exports_load_in_transformers_and_peft_and_peft_adapters_import(family, hf_dir, tmp_path):
    """Our LoRA model (random non-zero B) -> merged HF directory (transformers) and PEFT directory (peft on the
    transformers base): the same logits; an adapter made by peft itself, imported here: peft's logits."""
    import peft
    import torch
    import transformers

    tokens, mask = padded_batch()
    valid = mask.astype(bool)
    model, _ = load_hf(hf_dir[family])
    _adapt(model, rank=4, alpha=8.0)
    _randomise_b(model)
    ours = np.asarray(model(jnp.asarray(tokens), attention_mask=jnp.asarray(mask)))
    save_hf(lora.merged(model), tmp_path / "merged")
    np.testing.assert_allclose(hf_logits(tmp_path / "merged", tokens, mask)[valid], ours[valid], atol=1e-4)

    lora.save_peft(model, tmp_path / "adapter", base_model=str(hf_dir[family]))
    conf = json.loads((tmp_path / "adapter" / lora.ADAPTER_CONFIG).read_text())
    assert conf["r"] == 4 and conf["lora_alpha"] == 8 and conf["target_modules"] == [
        "down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    base = transformers.AutoModelForCausalLM.from_pretrained(str(hf_dir[family]), dtype=torch.float32).eval()
    theirs = _torch_logits(peft.PeftModel.from_pretrained(base, str(tmp_path / "adapter")).eval(), tokens, mask)
    np.testing.assert_allclose(theirs[valid], ours[valid], atol=1e-4)

    # An adapter peft made (both matrices random), on some modules only, rsLoRA for one family.
    base = transformers.AutoModelForCausalLM.from_pretrained(str(hf_dir[family]), dtype=torch.float32).eval()
    torch.manual_seed(0)
    made = peft.get_peft_model(base, peft.LoraConfig(r=3, lora_alpha=5, target_modules=["q_proj", "v_proj", "down_proj"],
                                                     init_lora_weights=False, use_rslora=family == "qwen3"))
    made.save_pretrained(str(tmp_path / "made"))
    theirs = _torch_logits(made.eval(), tokens, mask)
    imported, cfg = load_hf(hf_dir[family])
    info = lora.load_peft(imported, lora.read_peft(tmp_path / "made", cfg))
    assert info.rank == 3 and len(info.modules) == 3 * cfg.num_layers and info.rslora == (family == "qwen3")
    ours = np.asarray(imported(jnp.asarray(tokens), attention_mask=jnp.asarray(mask)))
    assert np.abs(theirs - hf_logits(hf_dir[family], tokens, mask))[valid].max() > 1e-2   # the adapter matters
    np.testing.assert_allclose(ours[valid], theirs[valid], atol=1e-4)


def test_peft_options_we_do_not_support_are_one_line_errors(hf_dir, tmp_path):
    import peft
    import transformers

    base = transformers.AutoModelForCausalLM.from_pretrained(str(hf_dir["llama"]))
    peft.get_peft_model(base, peft.LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(str(tmp_path / "a"))
    _, cfg = load_hf(hf_dir["llama"])
    conf_file = tmp_path / "a" / lora.ADAPTER_CONFIG
    good = json.loads(conf_file.read_text())
    for change, message in ((dict(use_dora=True), "use_dora=True is not supported"),
                            (dict(peft_type="IA3"), "peft_type='IA3' is not supported"),
                            (dict(rank_pattern={"q_proj": 4}), "rank_pattern={'q_proj': 4} is not supported"),
                            (dict(init_lora_weights="pissa"), "init_lora_weights='pissa' is not supported"),
                            (dict(modules_to_save=["lm_head"]), "modules_to_save=['lm_head'] is not supported")):
        conf_file.write_text(json.dumps({**good, **change}))
        with pytest.raises(CheckpointError, match=f"{conf_file}: " + message.replace("[", r"\[").replace("(", r"\(")):
            lora.read_peft(tmp_path / "a", cfg)
    conf_file.write_text(json.dumps(good))
    # Another family's module names agree, its shapes do not: refused by shape, never reshaped silently.
    other, other_cfg = load_hf(hf_dir["qwen3"])
    with pytest.raises(CheckpointError, match=r"layers.0.attn.q_proj has \(2, 32\) but the model's projection "
                                              r"needs \(2, 4, 16\)"):
        lora.load_peft(other, lora.read_peft(tmp_path / "a", other_cfg))
    (tmp_path / "a" / lora.ADAPTER_WEIGHTS).unlink()
    with pytest.raises(CheckpointError, match="adapter_model.safetensors does not exist"):
        lora.read_peft(tmp_path / "a", cfg)


@pytest.mark.slow
def test_a_lora_run_checkpoints_adapters_resumes_exactly_and_every_command_uses_them(tmp_path, demo_tokenizer):
    from monitor_jax import assemble, checkpoints
    from monitor_jax.runs import train_run

    def config(workdir, **train):
        c = run_config(workdir, demo_tokenizer, steps=4, **train)
        c.lora.rank, c.lora.alpha, c.optim.lr = 4, 8.0, 1e-2
        return c

    straight = train_run(config(tmp_path / "straight"))
    first = train_run(config(tmp_path / "resumed", run_steps=2))
    assert first.status == "paused"
    second = train_run(config(tmp_path / "resumed"))
    assert second.status == "finished" and second.step == 4
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                 jax.device_get(straight.state.params), jax.device_get(second.state.params))
    assert {type(v).__name__ for v in jax.tree.leaves(straight.state.params, is_leaf=lambda x: isinstance(
        x, nnx.Variable))} == {"LoRAParam"}

    # The checkpoint: adapters and their moments only (orbax's own record of the tree), and the base's record.
    step_dir = tmp_path / "straight" / "checkpoints" / "4"
    saved = ocp.StandardCheckpointer().metadata(step_dir / "state").item_metadata.tree
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(saved)[0]]
    arrays = [p for p in paths if p.endswith("['value']")]
    assert len(arrays) == 3 * 28 and all("['lora']['a']" in p or "['lora']['b']" in p for p in arrays)
    ref = checkpoints.resolve(str(tmp_path / "straight"), tmp_path)
    base = checkpoints.restore_item(ref, "base")
    assert base["path"] == "random init (model.config)" and len(base["fingerprint"]) == 32
    rt = assemble.runtime(config(tmp_path / "straight"), "")

    # eval/score/generate read the adapters unmerged: the same scores and tokens as the merged export.
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                 jax.device_get(nnx.state(nnx.merge(rt.graphdef, rt.params), lora.TRAINABLE)),
                 jax.device_get(straight.state.params))
    written = assemble.export(rt, rt.params, str(tmp_path / "hf"))
    assert written == [str(tmp_path / "hf"), str(tmp_path / "hf" / "adapter")]
    merged_rt = assemble.runtime(config(tmp_path / "straight"), str(tmp_path / "hf"))
    assert merged_rt.lora is None
    from monitor_jax.data.encode import ClassificationEncoder

    enc = ClassificationEncoder(rt.task("chem_harm"), rt.tokenizer, 64)
    rows = [enc({"text": f"how do I clean a lab bench {i}", "label": i % 2}) for i in range(6)]
    with jax.set_mesh(rt.mesh):
        ours = [s.log_odds for s in assemble.scorer(rt).score_all(rt.params, rows)]
        merged = [s.log_odds for s in assemble.scorer(merged_rt).score_all(merged_rt.params, rows)]
    np.testing.assert_allclose(ours, merged, atol=1e-4)
    assert np.ptp(ours) > 0
    prompts = [rt.tokenizer.encode("how do I clean a lab bench"), rt.tokenizer.encode("Repeat the word apple.")]
    with jax.set_mesh(rt.mesh):
        ours_ids = [g.ids for g in assemble.sampler(rt).generate(prompts, params=rt.params, max_new_tokens=6)]
        merged_ids = [g.ids for g in assemble.sampler(merged_rt).generate(prompts, params=merged_rt.params,
                                                                          max_new_tokens=6)]
    assert ours_ids == merged_ids and all(ours_ids)

    # Another base (the seed of the random init) is refused, naming both; so is the config without LoRA.
    other = config(tmp_path / "straight")
    other.seed = 1
    with pytest.raises(CheckpointError, match=r"holds LoRA adapters trained on the base random init \(model.config\) "
                                              r"\(fingerprint [0-9a-f]{32}\), but this run's base is .*fingerprint"):
        assemble.runtime(other, "")
    with pytest.raises(CheckpointError, match="holds LoRA adapters only but this config trains a full model"):
        plain = run_config(tmp_path / "straight", demo_tokenizer)
        assemble.runtime(plain, "")
    shutil.rmtree(tmp_path / "resumed")


def test_the_real_model_s_peft_export_gives_our_logits_in_peft(smollm2_dir, tmp_path):
    """SmolLM2-135M-Instruct with adapters as training leaves them (B non-zero): peft on the transformers model
    gives our logits."""
    import peft
    import torch
    import transformers

    model, _ = load_hf(smollm2_dir)
    _adapt(model, rank=8, alpha=16.0)
    _randomise_b(model, std=0.01)
    tok = transformers.AutoTokenizer.from_pretrained(str(smollm2_dir))
    enc = tok(["Is the agent deleting the backups without being asked? Answer Yes or No.",
               "Repeat the word apple."], padding=True, return_tensors="np")
    tokens, mask = enc["input_ids"].astype(np.int32), enc["attention_mask"].astype(np.int32)
    ours = np.asarray(model(jnp.asarray(tokens), attention_mask=jnp.asarray(mask)))
    lora.save_peft(model, tmp_path / "adapter", base_model=str(smollm2_dir))
    base = transformers.AutoModelForCausalLM.from_pretrained(str(smollm2_dir), dtype=torch.float32).eval()
    plain = _torch_logits(base, tokens, mask)
    theirs = _torch_logits(peft.PeftModel.from_pretrained(base, str(tmp_path / "adapter")).eval(), tokens, mask)
    valid = mask.astype(bool)
    assert np.abs(theirs - plain)[valid].max() > 0.1            # the adapters change the logits
    np.testing.assert_allclose(theirs[valid], ours[valid], atol=2e-3)
