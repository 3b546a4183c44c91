"""`generate`: write a reply for every row of a JSONL file, streaming, one output row per input row.

An input row is {"messages": [{"role", "content"}, ...]} or {"prompt": "..."} (one user turn), rendered with
the checkpoint's chat template; with `--task=NAME` it is the task's fields instead, rendered by the task's
prompt and cut by the task's truncation policy to fit generate.max_prompt_length (counted per row). Without a
task a prompt that does not fit is an error naming the line, never cut.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
from tqdm import tqdm

from monitor_jax import assemble
from monitor_jax.commands.streaming import RowWriter
from monitor_jax.config import validate
from monitor_jax.data.encode import ClassificationEncoder
from monitor_jax.data.sources import JsonlSource
from monitor_jax.errors import EXIT_OK, ConfigError, DataError


def chat_messages(row: Mapping[str, Any], where: str) -> list[dict]:
    """The conversation of a row: its `messages`, or its `prompt` as one user turn."""
    if "messages" in row:
        msgs = row["messages"]
        if not (isinstance(msgs, list) and msgs and all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in msgs)):
            raise DataError(f"{where}: 'messages' must be a non-empty list of {{\"role\": str, \"content\": str}}")
        return msgs
    if "prompt" in row:
        if not isinstance(row["prompt"], str):
            raise DataError(f"{where}: 'prompt' must be a string, got {type(row['prompt']).__name__}")
        return [{"role": "user", "content": row["prompt"]}]
    raise DataError(f"{where}: the row has neither 'messages' nor 'prompt' (has {sorted(row)})")


def generate_file(sampler, params, tokenizer, input_path: str, output_path: str, task=None, **settings) -> dict[str, int]:
    """Generate for every row of `input_path` into `output_path` (JSONL), streaming; returns the counts.

    One output row per input row: id, index (the 0-based input line), text (the reply without its stop
    token), new_tokens, finish ("stop" or "length"), truncated (prompt tokens the task cut; 0 without a task).
    Rows are written as their batch completes to OUTPUT.partial, renamed to OUTPUT when every row is done.
    """
    source = JsonlSource(input_path)
    enc = ClassificationEncoder(task, tokenizer, sampler.max_prompt_length) if task is not None else None
    pending: dict[int, tuple[Any, int]] = {}

    def prompts():
        for i in range(len(source)):
            row, where = source[i], source.describe(i)
            if enc is not None:
                ids, cut = enc.prompt_ids(row, where)
            else:
                ids, cut = sampler.encode_chat(chat_messages(row, where)), 0
                if len(ids) > sampler.max_prompt_length:
                    raise DataError(f"{where}: the prompt is {len(ids)} tokens > generate.max_prompt_length="
                                    f"{sampler.max_prompt_length}; raise it, shorten the row, or pass --task to "
                                    f"cut by a task's truncation policy")
            pending[i] = (row.get("id", i), cut)
            yield i, ids

    counts = dict(rows=0, truncated=0, stopped=0)
    with RowWriter(output_path) as writer, tqdm(total=len(source), desc="generate", unit="row",
                                                disable=jax.process_index() != 0) as bar:
        for g in sampler.stream(prompts(), params=params, **settings):
            row_id, cut = pending.pop(g.index)
            counts["rows"] += 1
            counts["truncated"] += cut > 0
            counts["stopped"] += g.finish == "stop"
            bar.update(1)
            writer.write(dict(id=row_id, index=g.index, text=sampler.text(g), new_tokens=len(g.ids),
                              finish=g.finish, truncated=cut))
        writer.finish(len(source), f"generate {input_path}")
    return counts


def run(config, flags) -> int:
    if not (flags.input and flags.output):
        raise ConfigError("generate needs --input and --output (and optionally --task, --checkpoint)")
    validate(config, jax.device_count(), training=False)
    rt = assemble.runtime(config, flags.checkpoint)
    task = rt.task(flags.task) if flags.task else None
    sampler = assemble.sampler(rt)
    g = config.generate
    counts = generate_file(sampler, rt.params, rt.tokenizer, flags.input, flags.output, task,
                           temperature=g.temperature, top_k=g.top_k, top_p=g.top_p, seed=g.seed)
    if jax.process_index() == 0:
        print(f"generated for {counts['rows']} rows of {flags.input} with {rt.description} -> {flags.output}; "
              f"{counts['stopped']} stopped on an end-of-turn token, {counts['rows'] - counts['stopped']} reached "
              f"generate.max_new_tokens={g.max_new_tokens}; {counts['truncated']} cut by the task's truncation")
    return EXIT_OK
