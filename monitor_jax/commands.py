"""What each CLI command does, callable from Python too; each returns the process exit code."""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import jax

from monitor_jax.errors import EXIT_OK, EXIT_PREEMPTED, ConfigError, NonFiniteError

log = logging.getLogger("monitor_jax")


def _table(before, after) -> str:
    rows = ["| task | domain | held out | n | AUROC before | AUROC after | eval loss before | eval loss after |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    after_by = {t["task"]: t for t in (after["tasks"] if after else [])}
    for t in (before or after)["tasks"]:
        a = after_by.get(t["task"])
        fmt = lambda x: f"{x:.3f}" if x is not None else "-"  # noqa: E731
        rows.append(f"| {t['task']} | {t['domain']} | {'yes' if t['heldout'] else 'no'} | {t['n']} | "
                    f"{fmt(t['metrics']['auroc']['value']) if before else '-'} | "
                    f"{fmt(a['metrics']['auroc']['value']) if a else '-'} | "
                    f"{fmt(t['loss']) if before else '-'} | {fmt(a['loss']) if a else '-'} |")
    return "\n".join(rows)


def train(config, flags=None) -> int:
    """Train or resume; EXIT_PREEMPTED after a SIGTERM/SIGINT save, so orchestrators restart the run."""
    from monitor_jax.train.trainer import train as run_train

    result = run_train(config)
    if jax.process_index() == 0:
        print(f"\n{result.status} at step {result.step}; work directory {config.workdir}")
        if result.status == "preempted":
            print(f"run the same command again to resume from step {result.step} (exit code {EXIT_PREEMPTED})")
        if result.eval_before or result.eval_after:
            print(_table(result.eval_before, result.eval_after))
    return EXIT_PREEMPTED if result.status == "preempted" else EXIT_OK


@dataclasses.dataclass
class Loaded:
    """What eval, score and export need from `--checkpoint`."""
    graphdef: Any
    params: Any
    mesh: Any
    tokenizer: Any
    tokenizer_dir: str
    description: str            # where the parameters came from
    step: int | None            # the orbax step, None for a Hugging Face directory or the base model


def load_params(config, checkpoint: str = "") -> Loaded:
    """Parameters for eval, score and export from `--checkpoint` (monitor_jax.checkpoints.resolve)."""
    import orbax.checkpoint as ocp
    from flax import nnx

    from monitor_jax import checkpoints
    from monitor_jax.config import validate
    from monitor_jax.model import load_hf
    from monitor_jax.parallel import make_mesh
    from monitor_jax.train.trainer import build_model, build_tokenizer, check_vocab

    validate(config, jax.device_count(), training=False)
    ref = checkpoints.resolve(checkpoint, config.workdir, config.train.best_metric, config.train.best_mode)
    mesh = make_mesh(**dict(config.mesh))
    tokenizer, tokenizer_dir = build_tokenizer(config)
    if ref.kind == "hf":
        model, cfg = load_hf(ref.path, mesh=mesh, param_dtype=config.model.param_dtype, dtype=config.model.dtype,
                             attention=config.model.attention, attention_block=config.model.attention_block)
        check_vocab(cfg.vocab_size, tokenizer, str(ref.path))
        return Loaded(nnx.graphdef(model), nnx.state(model, nnx.Param), mesh, tokenizer, tokenizer_dir,
                      ref.describe(), None)
    model = build_model(config, mesh, tokenizer)
    graphdef, params = nnx.graphdef(model), nnx.state(model, nnx.Param)
    if ref.kind == "orbax":
        params = checkpoints.restore_params(ref, jax.tree.map(ocp.utils.to_shape_dtype_struct, params))
    return Loaded(graphdef, params, mesh, tokenizer, tokenizer_dir, ref.describe(), ref.step)


def eval(config, flags=None) -> int:  # noqa: A001  (the command's name)
    """Score every configured eval task; write report.json/.md, roc.png and scores.jsonl."""
    from monitor_jax.eval.evaluator import Evaluator
    from monitor_jax.eval.report import write_report

    if not config.eval.tasks:
        raise ConfigError("eval.tasks is empty: nothing to evaluate")
    loaded = load_params(config, getattr(flags, "checkpoint", "") if flags else "")
    evaluator = Evaluator.from_config(config, loaded.tokenizer, loaded.graphdef, loaded.mesh)
    step = loaded.step or 0
    with jax.set_mesh(loaded.mesh):
        result = evaluator.run(loaded.params, step=step, bootstrap=config.eval.bootstrap)
    name = str(loaded.step) if loaded.step is not None else ("base" if loaded.description.startswith("base")
                                                              else Path(loaded.description).name)
    title = (f"checkpoint step {loaded.step}" if loaded.step is not None else loaded.description)
    out = write_report(result, {s.task.name: s.task for s in evaluator.sets}, Path(config.workdir) / "eval" / name,
                       title=title, source=loaded.description)
    if jax.process_index() == 0:
        print((out / "report.md").read_text())
        print(f"report written to {out}")
    return EXIT_OK


def score_file(loaded: Loaded, scorer, task, input_path: str, output_path: str) -> dict[str, int]:
    """Score every row of a JSONL file with `task`'s prompt, streaming; returns the counts.

    One output row per input row: id, index (the 0-based input line), task, score (log-odds), p_positive,
    truncated (tokens cut from the content field to fit the largest bucket; 0 if none), label if the row has
    one. Rows are written as their batch completes to OUTPUT.partial, renamed to OUTPUT when every row is
    scored; a bad row or a non-finite score stops the command naming the input line.
    """
    from monitor_jax.data.encode import ClassificationEncoder
    from monitor_jax.data.sources import JsonlSource

    source = JsonlSource(input_path)
    enc = ClassificationEncoder(task, loaded.tokenizer, scorer.max_length)
    cut: dict[int, int] = {}

    def examples():
        for i in range(len(source)):
            ex = enc(source[i], source.describe(i), require_label=False)
            cut[i] = ex.truncated_tokens
            yield ex

    partial = f"{output_path}.partial"
    writer = open(partial, "w") if jax.process_index() == 0 else None
    counts = dict(rows=0, truncated=0)
    try:
        with jax.set_mesh(loaded.mesh):
            for s in scorer.score(loaded.params, examples()):
                if not (math.isfinite(s.log_odds) and math.isfinite(s.p_positive)):
                    raise NonFiniteError(f"{source.describe(s.index)}: the score is {s.log_odds} with "
                                         f"{loaded.description}; stopped ({counts['rows']} rows were written "
                                         f"to {partial})")
                counts["rows"] += 1
                counts["truncated"] += cut[s.index] > 0
                if writer is None:
                    continue
                row = source[s.index]
                out = dict(id=row.get("id", s.index), index=s.index, task=task.name, score=s.log_odds,
                           p_positive=s.p_positive, truncated=cut.pop(s.index))
                if task.label_field in row:
                    out["label"] = int(task.label_of(row, source.describe(s.index)))
                writer.write(json.dumps(out, allow_nan=False) + "\n")
    finally:
        if writer is not None:
            writer.close()
    if counts["rows"] != len(source):   # a scorer that lost a row must never look like success
        raise RuntimeError(f"scored {counts['rows']} of {len(source)} rows of {input_path}")
    if writer is not None:
        os.replace(partial, output_path)
    return counts


def score(config, flags) -> int:
    """Score a JSONL file with one task's prompt (see `score_file`)."""
    from monitor_jax.data import tasks as registry
    from monitor_jax.eval.scoring import Scorer

    if not (flags.input and flags.output and flags.task):
        raise ConfigError("score needs --task, --input and --output")
    task = registry.get(flags.task)
    loaded = load_params(config, flags.checkpoint)
    scorer = Scorer(loaded.graphdef, loaded.mesh, config.eval.batch_size, tuple(config.eval.buckets),
                    loaded.tokenizer.pad_id)
    counts = score_file(loaded, scorer, task, flags.input, flags.output)
    if jax.process_index() == 0:
        print(f"scored {counts['rows']} rows of {flags.input} with {loaded.description} -> {flags.output}; "
              f"{counts['truncated']} truncated to {scorer.max_length} tokens (column 'truncated')")
    return EXIT_OK


def export(config, flags) -> int:
    """Write a trained checkpoint as a Hugging Face directory (with the tokenizer)."""
    from flax import nnx

    from monitor_jax.model import save_hf

    if not flags.output:
        raise ConfigError("export needs --output")
    loaded = load_params(config, flags.checkpoint)
    path = save_hf(nnx.merge(loaded.graphdef, loaded.params), flags.output, tokenizer=loaded.tokenizer_dir)
    if jax.process_index() == 0:
        print(f"exported {loaded.description} to {path}")
    return EXIT_OK
