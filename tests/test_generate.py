"""The sampler: greedy equality with transformers' generate, stop ids, sampling, compilation count, sharding."""
import numpy as np
import pytest
from flax import nnx
import scipy.stats

from monitor_jax.errors import ConfigError, DataError
from monitor_jax.generate import Sampler, compilations, generate_ids
from monitor_jax.model import load_hf
from monitor_jax.parallel import make_mesh
from tests.hf_models import FAMILIES, VOCAB


def ragged_prompts(seed=0, lengths=(5, 11, 8, 13)):
    rng = np.random.RandomState(seed)
    return [rng.randint(3, VOCAB, size=n).tolist() for n in lengths]


def hf_greedy(path, prompts, max_new_tokens, eos_token_id=None):
    """transformers' greedy generate, one prompt at a time (no padding: the plainest reference)."""
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    out = []
    for p in prompts:
        with torch.no_grad():
            ids = model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                                 max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos_token_id,
                                 pad_token_id=0)
        out.append(ids[0, len(p):].tolist())
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_equals_transformers(hf_dir, family):
    # Ragged prompts in one batch; llama has llama3 RoPE scaling with a 16-position original context and
    # Gemma 3 a sliding window of 4, so decoding runs well past both.
    model, _ = load_hf(hf_dir[family])
    prompts = ragged_prompts()
    ours = generate_ids(model, prompts, max_new_tokens=16)
    assert ours == hf_greedy(hf_dir[family], prompts, 16)


def test_rows_stop_independently_on_their_stop_ids(hf_dir):
    model, _ = load_hf(hf_dir["qwen3"])
    prompts = ragged_prompts(seed=3)
    free = generate_ids(model, prompts, max_new_tokens=16)
    stop = free[0][3]   # a token row 0 writes at step 3 (possibly earlier too)
    stopped = generate_ids(model, prompts, max_new_tokens=16, eos_ids=(stop,))
    for row, ids in zip(free, stopped):
        expected = row[:row.index(stop) + 1] if stop in row else row
        assert ids == expected   # nothing after a row's stop id, the other rows unaffected
    assert len(stopped[0]) <= 4
    # The same stops from transformers.
    assert stopped == hf_greedy(hf_dir["qwen3"], prompts, 16, eos_token_id=stop)


def test_sampling_is_seeded_and_top_k_1_is_greedy(hf_dir):
    model, _ = load_hf(hf_dir["llama"])
    prompts = ragged_prompts(seed=5)
    kw = dict(max_new_tokens=12, temperature=1.0)
    a, b = generate_ids(model, prompts, seed=1, **kw), generate_ids(model, prompts, seed=1, **kw)
    c = generate_ids(model, prompts, seed=2, **kw)
    assert a == b and a != c
    greedy = generate_ids(model, prompts, max_new_tokens=12)
    assert generate_ids(model, prompts, seed=3, top_k=1, **kw) == greedy
    assert generate_ids(model, prompts, max_new_tokens=12, temperature=5.0, top_k=1, seed=4) == greedy


def test_draws_do_not_depend_on_the_rest_of_the_batch(hf_dir):
    model, _ = load_hf(hf_dir["qwen2"])
    prompts = ragged_prompts(seed=6, lengths=(4, 9, 6, 12, 7))
    sampler = Sampler(nnx.graphdef(model), model.cfg, max_prompt_length=16, max_new_tokens=10, batch_size=4, eos_ids=())
    together = sampler.generate(prompts, params=nnx.state(model), temperature=1.0, seed=9)
    for i in (1, 4):   # alone in a batch (with padding rows), under the same index
        alone = list(sampler.stream([(i, prompts[i])], params=nnx.state(model), temperature=1.0, seed=9))
        assert alone[0].ids == together[i].ids


def test_temperature_1_draws_follow_the_softmax(hf_dir):
    model, _ = load_hf(hf_dir["gemma3"])
    prompt = ragged_prompts(seed=7, lengths=(6,))[0]
    logits = np.asarray(model(np.asarray([prompt]), np.ones((1, 6), np.int32)))[0, -1].astype(np.float64)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    n = 4096
    draws = [ids[0] for ids in generate_ids(model, [prompt] * n, max_new_tokens=1, temperature=1.0, seed=0,
                                            batch_size=512)]
    counts = np.bincount(draws, minlength=VOCAB)
    # Chi-square over the tokens expected at least 5 times, the rest lumped into one bin.
    big = probs * n >= 5
    observed = np.append(counts[big], counts[~big].sum())
    expected = np.append(probs[big] * n, probs[~big].sum() * n)
    assert big.sum() >= 5
    assert scipy.stats.chisquare(observed, expected).pvalue > 1e-3

    # top-k and top-p draw only inside their sets.
    top5 = set(np.argsort(-probs)[:5].tolist())
    drawn = {ids[0] for ids in generate_ids(model, [prompt] * 256, max_new_tokens=1, temperature=1.0, top_k=5,
                                            seed=1, batch_size=256)}
    assert drawn <= top5 and len(drawn) > 1
    order = np.argsort(-probs)
    nucleus = set(order[:np.searchsorted(np.cumsum(probs[order]), 0.5) + 1].tolist())
    drawn = {ids[0] for ids in generate_ids(model, [prompt] * 256, max_new_tokens=1, temperature=1.0, top_p=0.5,
                                            seed=2, batch_size=256)}
    assert drawn <= nucleus


def test_same_bucket_and_new_settings_do_not_recompile(hf_dir):
    model, _ = load_hf(hf_dir["qwen3"])
    sampler = Sampler(nnx.graphdef(model), model.cfg, max_prompt_length=32, max_new_tokens=8, batch_size=2, buckets=(16, 32), eos_ids=(7,))
    sampler.generate(ragged_prompts(seed=8, lengths=(5, 9)), params=nnx.state(model))
    before = compilations()
    # Two batches in the 16 bucket, other lengths, a temperature, top-k, top-p, seed, budget and stop ids.
    sampler.generate(ragged_prompts(seed=9, lengths=(3, 16, 12, 7)), params=nnx.state(model), temperature=0.7, top_k=5, top_p=0.9, seed=3,
                     max_new_tokens=5, eos_ids=(9, 11))
    assert compilations() == before
    sampler.generate(ragged_prompts(seed=10, lengths=(20,)), params=nnx.state(model))   # the 32 bucket: one new program
    assert compilations() == before + 1


def test_sharded_equals_single_device(hf_dir):
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    single, _ = load_hf(hf_dir["gemma3"])
    sharded, _ = load_hf(hf_dir["gemma3"], mesh=mesh)
    prompts = ragged_prompts(seed=11, lengths=(5, 11, 8, 13, 6, 9, 4, 10))
    for kw in (dict(), dict(temperature=0.8, top_k=20, seed=5)):
        ours = generate_ids(single, prompts, max_new_tokens=12, **kw)
        assert generate_ids(sharded, prompts, max_new_tokens=12, mesh=mesh, **kw) == ours, kw


def test_sizes_are_checked_before_anything_runs(hf_dir):
    model, cfg = load_hf(hf_dir["llama"])   # max_position_embeddings = 128
    with pytest.raises(ConfigError, match="exceeds the model's 128 positions"):
        Sampler(nnx.graphdef(model), model.cfg, max_prompt_length=100, max_new_tokens=29)
    sampler = Sampler(nnx.graphdef(model), model.cfg, max_prompt_length=16, max_new_tokens=8, batch_size=2)
    with pytest.raises(DataError, match="prompt 1 is 17 tokens, longer than max_prompt_length=16"):
        sampler.generate([[5] * 3, [5] * 17], params=nnx.state(model))
    with pytest.raises(DataError, match="prompt 0 is empty"):
        sampler.generate([[]], params=nnx.state(model))
    with pytest.raises(DataError, match=r"prompt 1 has token id 256 outside the model's vocabulary \[0, 256\)"):
        sampler.generate([[5], [4, 256]], params=nnx.state(model))
    with pytest.raises(ConfigError, match="max_new_tokens=9 must be in"):
        sampler.generate([[5] * 3], params=nnx.state(model), max_new_tokens=9)
    with pytest.raises(ConfigError, match="top_p"):
        sampler.generate([[5] * 3], params=nnx.state(model), top_p=0.0)
    with pytest.raises(ConfigError, match="batch_size=3 is not divisible"):
        Sampler(nnx.graphdef(model), model.cfg, mesh=make_mesh(data=2, fsdp=2, tensor=2), max_prompt_length=16, max_new_tokens=8, batch_size=3)


CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Write a haiku about the sea."}],
    [{"role": "user", "content": "List three prime numbers."}],
    [{"role": "system", "content": "You are a safety monitor."},
     {"role": "user", "content": "Explain in detail why mixing bleach and ammonia is dangerous."}],
]


def test_real_checkpoint_chat_equals_transformers(smollm2_dir):
    """SmolLM2-135M-Instruct: Sampler.chat, greedy, token for token with transformers' generate, stopping on
    the ChatML end-of-turn token the checkpoint declares."""
    import torch
    import transformers

    from monitor_jax.model.tokenizer import load_tokenizer

    tok = load_tokenizer(smollm2_dir)
    model, _ = load_hf(smollm2_dir)
    sampler = Sampler(nnx.graphdef(model), model.cfg, tok, max_prompt_length=64, max_new_tokens=48, batch_size=4)
    im_end = tok.hf.convert_tokens_to_ids("<|im_end|>")
    assert im_end in sampler.eos_ids
    prompts = [sampler.encode_chat(c) for c in CHATS]
    ours = sampler.generate(prompts, params=nnx.state(model))
    texts = sampler.chat(CHATS, params=nnx.state(model))

    hf = transformers.AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    for p, g, text in zip(prompts, ours, texts):
        with torch.no_grad():
            out = hf.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                              max_new_tokens=48, do_sample=False)
        ref = out[0, len(p):].tolist()
        assert g.ids == ref
        assert (g.finish == "stop") == (ref[-1] == im_end)
        assert text == tok.decode(ref[:-1] if g.finish == "stop" else ref)
    assert sum(g.finish == "stop" for g in ours) >= 2 and sum(len(g.ids) >= 32 for g in ours) >= 2
    assert texts[0].strip() == "The capital of France is Paris."


def test_non_finite_logits_stop_the_sampler(hf_dir):
    import jax

    from monitor_jax.errors import NonFiniteError

    model, _ = load_hf(hf_dir["qwen2"])
    model.final_norm.scale[...] = jax.numpy.full_like(model.final_norm.scale[...], jax.numpy.nan)
    with pytest.raises(NonFiniteError, match=r"prompt\(s\) \[0, 1\]"):
        generate_ids(model, [[5, 6], [7, 8, 9]], max_new_tokens=3)


def test_stop_ids_come_from_tokenizer_config_and_generation_config(tmp_path, small_tokenizer, hf_dir):
    import json
    import shutil

    from monitor_jax.generate import stop_ids

    # Gemma 3 declares <eos> in config.json and adds <end_of_turn> in generation_config.json.
    ckpt = tmp_path / "gemma"
    shutil.copytree(hf_dir["gemma3"], ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps(dict(config, eos_token_id=1)))
    (ckpt / "generation_config.json").write_text(json.dumps({"eos_token_id": [1, 106]}))
    im_end = small_tokenizer.eos_id
    assert stop_ids(small_tokenizer, str(ckpt)) == (im_end, 1, 106)
    assert stop_ids(None, str(ckpt)) == (1, 106)
    model, _ = load_hf(ckpt)
    assert Sampler(nnx.graphdef(model), model.cfg, small_tokenizer, max_prompt_length=16, max_new_tokens=4).eos_ids == (im_end, 1, 106)
