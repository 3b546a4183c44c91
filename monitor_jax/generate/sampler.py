"""Batched generation over ragged prompts: `Sampler` (chat in, text out) and `generate_ids` (ids in, ids out).

Prompts are grouped by length bucket and run `batch_size` at a time through one jitted function
(`generate/decode.py`), so the number of compilations is bounded by the buckets: batch composition, the
sampling settings, the seed and the budget (up to the Sampler's `max_new_tokens`) are all traced. The last
partial batch of a bucket is padded with inactive rows. On a mesh the batch is split over the batch axes
(`data`, `fsdp`) and the KV cache's heads over `tensor`, by the model's own logical-axis rules;
multi-host, every process iterates the same prompts and feeds its slice of each batch, as the scorer does.

This sampler is for generation inside the research loop (thinking classification, summaries, elicitation:
thousands of rows). For very large offline generation, export the checkpoint (`export`) and serve it with
vLLM (GPU) or tpu-inference / vLLM on TPU; see the README.
"""
from __future__ import annotations

import bisect
import dataclasses
import json
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from monitor_jax.data.pipeline import length_batches
from monitor_jax.errors import ConfigError, DataError, NonFiniteError
from monitor_jax.generate.decode import NO_TOKEN, generate_batch
from monitor_jax.parallel.mesh import batch_split
from monitor_jax.parallel.multihost import global_batch
from monitor_jax.settings import setting

DEFAULT_BUCKETS = (64, 128, 256, 512, 1024, 2048, 4096, 8192)
STOP_SLOTS = 8   # stop ids are passed as a fixed-size array (padded), so their number does not recompile

# One jitted function for every Sampler: compiled programs are shared by models of the same structure.
_GENERATE = jax.jit(generate_batch, static_argnums=(0,), static_argnames=("capacity",))


@dataclasses.dataclass(frozen=True)
class GenerateConfig:
    """The `generate` config section: prompt buckets up to max_prompt_length; cache = bucket + max_new_tokens."""
    batch_size: int = setting(8, "prompts per generation batch", low=1)
    max_prompt_length: int = setting(512, "the longest prompt (a longer one is an error)", low=1)
    max_new_tokens: int = setting(256, "tokens generated at most", low=1)
    buckets: tuple = setting((128, 256, 512), "prompt-length buckets (one compilation each)", low=1)
    temperature: float = setting(0.0, "0 = greedy", low=0.0)
    top_k: int = setting(0, "sample among the k likeliest tokens (0 = all)", low=0)
    top_p: float = setting(1.0, "nucleus sampling's probability mass", low=1e-9, high=1.0)
    seed: int = setting(0, "the sampling seed", low=0)


def compilations() -> int:
    """How many generation programs have been compiled in this process (for tests and benchmarks)."""
    return _GENERATE._cache_size()


@dataclasses.dataclass
class Generation:
    index: int              # the prompt's position in the input
    ids: list[int]          # new token ids, the stop id included when the row stopped on one
    finish: str             # "stop" (wrote a stop id) or "length" (the budget ran out)

    @property
    def reply_ids(self) -> list[int]:
        """The new ids without the stop id that ended them."""
        return self.ids[:-1] if self.finish == "stop" else self.ids


def stop_ids(tokenizer, model_dir: str | None = None) -> tuple[int, ...]:
    """Every end-of-turn id declared by the tokenizer, config.json and generation_config.json.

    E.g. Gemma 3: <eos> and <end_of_turn>; Qwen: <|im_end|> and <|endoftext|>; Llama 3: <|eot_id|>, ...
    """
    ids: list[int] = []

    def add(value):
        for v in (value if isinstance(value, (list, tuple)) else [value]):
            if isinstance(v, int) and v not in ids:
                ids.append(v)

    if tokenizer is not None:
        add(tokenizer.eos_id)
    dirs = [d for d in (model_dir, getattr(getattr(tokenizer, "hf", None), "name_or_path", None)) if d]
    for d in dirs:
        for name in ("generation_config.json", "config.json"):
            path = Path(d) / name
            if path.is_file():
                add(json.loads(path.read_text()).get("eos_token_id"))
    return tuple(ids)


def prompt_buckets(max_prompt_length: int, buckets: Sequence[int] | None = None) -> tuple[int, ...]:
    """The bucket lengths up to max_prompt_length, which is always the last."""
    chosen = sorted({b for b in (buckets or DEFAULT_BUCKETS) if b < max_prompt_length} | {max_prompt_length})
    if chosen[0] <= 0:
        raise ConfigError(f"prompt buckets {tuple(chosen)} must be positive lengths")
    return tuple(chosen)


class Sampler:
    """Generates for batches of ragged prompts with the model `graphdef` describes (its `cfg`), on `mesh` if
    given; the parameters come with each call, so one sampler serves every checkpoint of a run.

    `max_prompt_length` and `max_new_tokens` size the KV cache (bucket + max_new_tokens slots); their sum
    must fit the model's positions. A longer prompt is an error, never cut: truncation belongs to a task
    (the `generate` command truncates with `--task`'s policy and counts it).
    """

    def __init__(self, graphdef: nnx.GraphDef, cfg, tokenizer=None, mesh: Mesh | None = None, *,
                 max_prompt_length: int = 1024, max_new_tokens: int = 256, batch_size: int = 8,
                 buckets: Sequence[int] | None = None, eos_ids: Sequence[int] | None = None):
        self.graphdef, self.cfg = graphdef, cfg
        self.tokenizer, self.mesh, self.batch_size = tokenizer, mesh, batch_size
        for name, value in (("max_prompt_length", max_prompt_length), ("max_new_tokens", max_new_tokens),
                            ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name}={value!r} must be a positive integer")
        if max_prompt_length + max_new_tokens > self.cfg.max_positions:
            raise ConfigError(f"max_prompt_length={max_prompt_length} + max_new_tokens={max_new_tokens} exceeds "
                              f"the model's {self.cfg.max_positions} positions (max_position_embeddings)")
        self.max_prompt_length, self.max_new_tokens = max_prompt_length, max_new_tokens
        self.buckets = prompt_buckets(max_prompt_length, buckets)
        self.eos_ids = tuple(stop_ids(tokenizer, self.cfg.source_path or None) if eos_ids is None else eos_ids)
        self.process, self.processes = jax.process_index(), jax.process_count()
        for ways, what in ((batch_split(mesh), "data x fsdp devices"), (self.processes, "processes")):
            if batch_size % ways:
                raise ConfigError(f"batch_size={batch_size} is not divisible by the {ways} {what} it is split over")

    # ------------------------------------------------------------------ ids
    def _stops(self, eos_ids: Sequence[int]) -> np.ndarray:
        n = -(-max(len(eos_ids), 1) // STOP_SLOTS) * STOP_SLOTS
        out = np.full(n, NO_TOKEN, np.int32)
        out[:len(eos_ids)] = eos_ids
        return out

    def _bucket(self, index: int, ids: Sequence[int]) -> int:
        n = len(ids)
        if n == 0:
            raise DataError(f"prompt {index} is empty")
        lo, hi = min(ids), max(ids)
        if lo < 0 or hi >= self.cfg.vocab_size:   # an id past the embedding would read garbage, silently
            raise DataError(f"prompt {index} has token id {lo if lo < 0 else hi} outside the model's vocabulary "
                            f"[0, {self.cfg.vocab_size})")
        i = bisect.bisect_left(self.buckets, n)
        if i == len(self.buckets):
            raise DataError(f"prompt {index} is {n} tokens, longer than max_prompt_length={self.max_prompt_length}; "
                            f"raise it or shorten the prompt (the sampler never truncates)")
        return self.buckets[i]

    def _run(self, params, rows: list[tuple[int, Sequence[int]]], length: int, settings: dict) -> list[Generation]:
        b = self.batch_size
        arrays = dict(tokens=np.zeros((b, length), np.int32), mask=np.zeros((b, length), np.int32),
                      row_id=np.zeros(b, np.int32), active=np.zeros(b, bool))
        for r, (index, ids) in enumerate(rows):   # left padding: every row's next token goes to the same slot
            arrays["tokens"][r, length - len(ids):] = ids
            arrays["mask"][r, length - len(ids):] = 1
            arrays["row_id"][r], arrays["active"][r] = index, True
        arrays["mask"][len(rows):, -1] = 1   # padding rows: one token, so no row is all padding
        if self.mesh is None:
            batch = {k: jax.numpy.asarray(v) for k, v in arrays.items()}
            out = _GENERATE(self.graphdef, params, batch, settings, capacity=self.max_new_tokens)
        else:
            local = b // self.processes
            sl = slice(self.process * local, (self.process + 1) * local)
            with jax.set_mesh(self.mesh):
                batch = global_batch({k: v[sl] for k, v in arrays.items()}, self.mesh, self.cfg.sharding_rules)
                out = _GENERATE(self.graphdef, params, batch, settings, capacity=self.max_new_tokens)
        tokens_BxN, count_B, finite_B = jax.device_get((out["tokens"], out["count"], out["finite"]))
        bad = [index for r, (index, _) in enumerate(rows) if not finite_B[r]]
        if bad:
            raise NonFiniteError(f"the model's logits became NaN or Inf while generating for prompt(s) {bad[:8]}; "
                                 f"nothing was returned for them (check the checkpoint and the dtype)")
        stops = set(int(s) for s in settings["stop_ids"] if s != NO_TOKEN)
        done = []
        for r, (index, _) in enumerate(rows):
            ids = [int(t) for t in tokens_BxN[r, :count_B[r]]]
            assert NO_TOKEN not in ids, "a row's count ran past its written tokens"
            done.append(Generation(index, ids, "stop" if ids and ids[-1] in stops else "length"))
        return done

    def stream(self, prompts: Iterable[tuple[int, Sequence[int]]], *, max_new_tokens: int | None = None,
               temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0,
               eos_ids: Sequence[int] | None = None, params) -> Iterator[Generation]:
        """Generations in completion order for (index, prompt ids) pairs; holds one batch per bucket.

        `index` seeds the row's draws: the same index, prompt and seed give the same output in any batch.
        `params`: the model's parameters (nnx.Param state) to generate with.
        """
        budget = self.max_new_tokens if max_new_tokens is None else max_new_tokens
        if not 0 < budget <= self.max_new_tokens:
            raise ConfigError(f"max_new_tokens={budget} must be in [1, {self.max_new_tokens}] (the Sampler's "
                              f"max_new_tokens sizes the cache)")
        if temperature < 0 or top_k < 0 or not 0 < top_p <= 1:
            raise ConfigError(f"temperature={temperature} must be >= 0, top_k={top_k} >= 0 and top_p={top_p} in "
                              f"(0, 1]")
        settings = dict(temperature=np.float32(temperature), top_k=np.int32(top_k), top_p=np.float32(top_p),
                        seed=np.uint32(seed), budget=np.int32(budget),
                        stop_ids=self._stops(self.eos_ids if eos_ids is None else tuple(eos_ids)))
        for length, rows in length_batches(((index, list(ids)) for index, ids in prompts),
                                           lambda row: self._bucket(*row), self.batch_size):
            yield from self._run(params, rows, length, settings)

    def generate(self, prompts: Sequence[Sequence[int]], *, params, **kw) -> list[Generation]:
        """Generations in input order (keyword arguments as `stream`)."""
        return sorted(self.stream(enumerate(prompts), params=params, **kw), key=lambda g: g.index)

    # ------------------------------------------------------------------ chat
    def encode_chat(self, messages: Sequence[dict]) -> list[int]:
        """The checkpoint's chat template with the generation prompt, as ids."""
        if self.tokenizer is None:
            raise ConfigError("Sampler.chat needs a tokenizer")
        return self.tokenizer.encode(self.tokenizer.chat(messages, add_generation_prompt=True))

    def text(self, generation: Generation) -> str:
        """The reply's text: the new tokens without the stop id that ended them."""
        return self.tokenizer.decode(generation.reply_ids)

    def chat(self, conversations: Sequence[Sequence[dict]], *, params, **kw) -> list[str]:
        """Replies to chat conversations (lists of {"role", "content"}), in order (keyword arguments as
        `stream`)."""
        prompts = [self.encode_chat(messages) for messages in conversations]
        return [self.text(g) for g in self.generate(prompts, params=params, **kw)]


def generate_ids(model, prompts: Sequence[Sequence[int]], max_new_tokens: int = 64, temperature: float = 0.0,
                 top_k: int = 0, top_p: float = 1.0, eos_ids: Sequence[int] = (), seed: int = 0, *,
                 mesh: Mesh | None = None, batch_size: int | None = None,
                 buckets: Sequence[int] | None = None) -> list[list[int]]:
    """New ids per prompt, in order; a row stops after the first id in `eos_ids` (included).

    `prompts` are ragged lists of ids; temperature 0 is greedy. A one-call wrapper over `Sampler` (the
    compiled program is shared across calls with the same shapes).
    """
    if not prompts:
        return []
    longest = max(len(p) for p in prompts)
    # The smallest bucket that holds the longest prompt, if the model's positions leave room for it.
    bucket = next((b for b in sorted(buckets or DEFAULT_BUCKETS) if b >= longest), longest)
    max_prompt_length = min(bucket, max(longest, model.cfg.max_positions - max_new_tokens))
    dp = batch_split(mesh)
    size = batch_size or -(-min(len(prompts), 32) // dp) * dp
    graphdef, params = nnx.split(model)
    sampler = Sampler(graphdef, model.cfg, None, mesh, max_prompt_length=max_prompt_length,
                      max_new_tokens=max_new_tokens, batch_size=size, buckets=buckets, eos_ids=tuple(eos_ids))
    return [g.ids for g in sampler.generate(prompts, params=params, temperature=temperature, top_k=top_k,
                                            top_p=top_p, seed=seed)]
