"""The jitted generation loop: prefill the prompt batch, then decode inside one `lax.while_loop`.

    prefill   left-padded prompts [B, T] -> next-token logits at the last position [B, V] and a KV cache
              of T + capacity slots; every row writes its next token at the same slot (an in-place
              slice update), and its RoPE position is the slot minus its padding, so positions carry
              on from each row's own prompt;
    loop      sample, write the token, feed it back, until every row has written a stop id or the
              budget is spent. Everything stays on device: no per-token host round trip.

The cache lives in the loop carry, which XLA updates in place; the token buffer [B, capacity] is the only
output besides each row's count. Sliding-window layers keep the full cache and mask by position (the
window test in `MaskInfo`), which is exact beyond the window. Rows that are done keep running (static
batching) but nothing they produce is written.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from monitor_jax.generate.sampling import next_tokens, row_keys
from monitor_jax.parallel.sharding import constrain

NO_TOKEN = -1   # in the token buffer: nothing written at this step (the row was done, or padding)


def generate_batch(graphdef: nnx.GraphDef, params: nnx.State, batch: dict, settings: dict, *,
                   capacity: int) -> dict:
    """New tokens [B, capacity] (NO_TOKEN after a row's end), their count per row [B], and whether every
    logit a row's tokens were chosen from was finite [B] (a NaN must stop the caller, not become a token).

    batch:    tokens [B, T] left-padded, mask [B, T], row_id [B] (seeds each row's draws), active [B]
              (False: a padding row, done before it starts).
    settings: scalars temperature, top_k, top_p, seed, budget (<= capacity), and stop_ids [E]
              (padded with NO_TOKEN). All traced: changing them does not recompile.
    """
    model = nnx.merge(graphdef, params)
    rules = model.cfg.sharding_rules
    tokens_BxT, mask_BxT = batch["tokens"], batch["mask"]
    b, t = tokens_BxT.shape
    stop_E, budget = settings["stop_ids"], settings["budget"]

    def choose(logits_BxV, step):
        keys_B = row_keys(settings["seed"], batch["row_id"], step)
        return next_tokens(logits_BxV, keys_B, settings["temperature"], settings["top_k"], settings["top_p"])

    def is_stop(tok_B):
        return (tok_B[:, None] == stop_E[None, :]).any(axis=-1)

    logits_BxV, cache = model.prefill(tokens_BxT, mask_BxT, t + capacity)
    first_B, finite_B = choose(logits_BxV, 0)
    live_B = batch["active"]
    out_BxN = jnp.full((b, capacity), NO_TOKEN, jnp.int32).at[:, 0].set(jnp.where(live_B, first_B, NO_TOKEN))
    out_BxN = constrain(out_BxN, ("batch", None), rules)
    count_B = live_B.astype(jnp.int32)
    done_B = ~live_B | is_stop(first_B)
    finite_B = finite_B | ~live_B

    def cond(carry):
        step, _, _, _, _, done_B, _ = carry
        return (step < budget) & ~done_B.all()

    def body(carry):
        step, prev_B, cache, out_BxN, count_B, done_B, finite_B = carry
        logits_Bx1xV, cache = model.decode(prev_B[:, None], cache)
        tok_B, ok_B = choose(logits_Bx1xV[:, 0], step)
        out_BxN = jax.lax.dynamic_update_slice_in_dim(out_BxN, jnp.where(done_B, NO_TOKEN, tok_B)[:, None],
                                                      step, axis=1)
        count_B = count_B + (~done_B).astype(jnp.int32)
        return step + 1, tok_B, cache, out_BxN, count_B, done_B | is_stop(tok_B), finite_B & (ok_B | done_B)

    _, _, _, out_BxN, count_B, _, finite_B = jax.lax.while_loop(
        cond, body, (jnp.int32(1), first_B, cache, out_BxN, count_B, done_B, finite_B))
    # Replicated, so every process can read every row (multi-host: each fed only its own).
    return dict(tokens=constrain(out_BxN, (None, None), rules), count=constrain(count_B, (None,), rules),
                finite=constrain(finite_B, (None,), rules))
