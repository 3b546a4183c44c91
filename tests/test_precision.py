"""The mixed-precision policy (docs/precision.md): bfloat16 compute tracks float32 training, the moments' dtypes
are the ones asked for, and bfloat16 log-odds of the real model stay within the documented tolerance."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.train_helpers import run_config

# The documented bands (docs/precision.md), measured on the demo config: bfloat16 compute against float32.
LOSS_GAP_ANY_STEP = 0.10        # relative training-loss gap at any of the 50 steps
LOSS_GAP_LAST_10 = 0.03         # mean relative gap over the last 10 steps
LOG_ODDS_TOLERANCE = 0.25       # |log-odds(bf16 compute) - log-odds(float32)| on SmolLM2-135M-Instruct


def _losses(workdir):
    rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    return np.array([r["train/loss"] for r in sorted(rows, key=lambda r: r["step"]) if "train/loss" in r])


@pytest.mark.slow
def test_bfloat16_compute_tracks_the_float32_loss_and_moments_have_the_asked_dtypes(tmp_path, demo_tokenizer):
    from monitor_jax.runs import train_run

    def run(name, dtype, mu_dtype="float32"):
        c = run_config(tmp_path / name, demo_tokenizer, steps=50, checkpoint_every=50)
        c.model.dtype, c.optim.mu_dtype, c.optim.lr, c.optim.warmup_steps = dtype, mu_dtype, 3e-3, 5
        return train_run(c)

    f32, bf16 = run("f32", "float32"), run("bf16", "bfloat16", mu_dtype="bfloat16")
    a, b = _losses(tmp_path / "f32"), _losses(tmp_path / "bf16")
    assert len(a) == len(b) == 50 and a[-1] < a[0] - 0.5          # it learns
    gap = np.abs(b - a) / a
    assert gap.max() < LOSS_GAP_ANY_STEP and gap[-10:].mean() < LOSS_GAP_LAST_10, gap
    assert gap.max() > 0                                            # the runs really differ in precision
    # Parameters stay float32; the first moment is bfloat16 when asked, the second follows the parameters.
    adam = bf16.state.opt_state[1][0]
    assert {x.dtype for x in jax.tree.leaves(bf16.state.params)} == {jnp.dtype("float32")}
    assert {x.dtype for x in jax.tree.leaves(adam.mu)} == {jnp.dtype("bfloat16")}
    assert {x.dtype for x in jax.tree.leaves(adam.nu)} == {jnp.dtype("float32")}
    assert {x.dtype for x in jax.tree.leaves(f32.state.opt_state[1][0].mu)} == {jnp.dtype("float32")}


def test_bfloat16_log_odds_of_the_real_model_are_within_the_documented_tolerance(smollm2_dir):
    import transformers

    from monitor_jax.model import load_hf

    tok = transformers.AutoTokenizer.from_pretrained(str(smollm2_dir))
    asks = ["make a bomb", "bake bread", "poison a neighbour", "fix a bike", "hack my school's server",
            "write a poem", "buy a gun illegally", "learn python"]
    ids = [list(tok.apply_chat_template([{"role": "user", "content": f"Is this request harmful? 'how do I {x}' "
                                                                    f"Answer Yes or No."}],
                                        add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"])
           for x in asks]
    length = max(map(len, ids))
    tokens = jnp.asarray([i + [0] * (length - len(i)) for i in ids])
    mask = jnp.asarray([[1] * len(i) + [0] * (length - len(i)) for i in ids])
    last = np.array([len(i) - 1 for i in ids])
    yes, no = tok.convert_tokens_to_ids("Yes"), tok.convert_tokens_to_ids("No")
    log_odds = {}
    for dtype in ("float32", "bfloat16"):
        model, _ = load_hf(smollm2_dir, dtype=dtype)
        hidden = model.hidden_states(tokens, attention_mask=mask)
        assert hidden.dtype == jnp.dtype(dtype)
        logits = model.unembed(hidden[np.arange(len(ids)), last])
        assert logits.dtype == jnp.float32                         # the readout is float32 in either policy
        log_odds[dtype] = np.asarray(logits[:, yes] - logits[:, no])
    gap = np.abs(log_odds["bfloat16"] - log_odds["float32"])
    assert 0 < gap.max() < LOG_ODDS_TOLERANCE, gap
