"""`score`: score a JSONL file with one task's prompt, streaming, one output row per input row."""
from __future__ import annotations

import math

import jax
from tqdm import tqdm

from monitor_jax import assemble
from monitor_jax.commands.streaming import RowWriter
from monitor_jax.config import validate
from monitor_jax.data.encode import ClassificationEncoder
from monitor_jax.data.sources import JsonlSource
from monitor_jax.errors import EXIT_OK, ConfigError, NonFiniteError


def score_file(rt: assemble.Runtime, scorer, task, input_path: str, output_path: str) -> dict[str, int]:
    """Score every row of a JSONL file with `task`'s prompt, streaming; returns the counts.

    One output row per input row: id, index (the 0-based input line), task, score (log-odds), p_positive,
    truncated (tokens cut from the content field to fit the largest bucket; 0 if none), label if the row has
    one. Rows are written as their batch completes to OUTPUT.partial, renamed to OUTPUT when every row is
    scored; a bad row or a non-finite score stops the command naming the input line.
    """
    source = JsonlSource(input_path)
    enc = ClassificationEncoder(task, rt.tokenizer, scorer.max_length)
    # What each output row needs from its input, kept from encoding (so no row is read twice) until scored.
    pending: dict[int, tuple[object, int, int]] = {}

    def examples():
        for i in range(len(source)):
            row = source[i]
            ex = enc(row, source.describe(i), require_label=False)
            pending[i] = (row.get("id", i), ex.label, ex.truncated_tokens)
            yield ex

    counts = dict(rows=0, truncated=0)
    with RowWriter(output_path) as writer, jax.set_mesh(rt.mesh), tqdm(
            total=len(source), desc="score", unit="row", disable=jax.process_index() != 0) as bar:
        for s in scorer.score(rt.params, examples()):
            if not (math.isfinite(s.log_odds) and math.isfinite(s.p_positive)):
                raise NonFiniteError(f"{source.describe(s.index)}: the score is {s.log_odds} with "
                                     f"{rt.description}; stopped ({counts['rows']} rows were written "
                                     f"to {writer.partial})")
            row_id, label, truncated = pending.pop(s.index)
            counts["rows"] += 1
            counts["truncated"] += truncated > 0
            bar.update(1)
            out = dict(id=row_id, index=s.index, task=task.name, score=s.log_odds, p_positive=s.p_positive,
                       truncated=truncated)
            if label >= 0:   # the row has a label (encoded with require_label=False: -1 when it has none)
                out["label"] = label
            writer.write(out)
        writer.finish(len(source), f"score {input_path}")
    return counts


def run(config, flags) -> int:
    if not (flags.input and flags.output and flags.task):
        raise ConfigError("score needs --task, --input and --output")
    validate(config, jax.device_count(), training=False)
    rt = assemble.runtime(config, flags.checkpoint)
    scorer = assemble.scorer(rt)
    counts = score_file(rt, scorer, rt.task(flags.task), flags.input, flags.output)
    if jax.process_index() == 0:
        print(f"scored {counts['rows']} rows of {flags.input} with {rt.description} -> {flags.output}; "
              f"{counts['truncated']} truncated to {scorer.max_length} tokens (column 'truncated')")
    return EXIT_OK
