"""What each CLI command does, callable from Python too."""
from __future__ import annotations

import logging

import jax

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


def train(config, flags=None):
    from monitor_jax.train.trainer import train as run_train

    result = run_train(config)
    if jax.process_index() == 0:
        print(f"\n{result.status} at step {result.step}; work directory {config.workdir}")
        if result.eval_before or result.eval_after:
            print(_table(result.eval_before, result.eval_after))
    return result


def load_params(config, checkpoint: str = ""):
    """(graphdef, params, mesh, tokenizer, tokenizer_dir, description) for eval, score and export.

    `checkpoint`: an orbax step directory, a Hugging Face directory, or "" for the
    run's latest checkpoint (else the untrained base model).
    """
    from pathlib import Path

    import orbax.checkpoint as ocp
    from flax import nnx

    from monitor_jax.model import load_hf
    from monitor_jax.parallel import make_mesh
    from monitor_jax.train.trainer import build_model, build_tokenizer

    mesh = make_mesh(**dict(config.mesh))
    tokenizer, tokenizer_dir = build_tokenizer(config)
    if checkpoint and (Path(checkpoint) / "config.json").exists() and not (Path(checkpoint) / "state").exists():
        model, _ = load_hf(checkpoint, mesh=mesh, param_dtype=config.model.param_dtype, dtype=config.model.dtype,
                           attention=config.model.attention, attention_block=config.model.attention_block)
        return nnx.graphdef(model), nnx.state(model, nnx.Param), mesh, tokenizer, tokenizer_dir, checkpoint
    model = build_model(config, mesh, tokenizer)
    graphdef, params = nnx.graphdef(model), nnx.state(model, nnx.Param)
    if checkpoint:
        directory, step = Path(checkpoint).resolve().parent, int(Path(checkpoint).name)
    else:
        directory, step = Path(config.workdir).resolve() / "checkpoints", None
    if not directory.exists() or (step is None and ocp.CheckpointManager(directory).latest_step() is None):
        if checkpoint:
            raise FileNotFoundError(f"no checkpoint at {checkpoint}")
        return graphdef, params, mesh, tokenizer, tokenizer_dir, "base model (untrained)"
    mngr = ocp.CheckpointManager(directory)
    step = mngr.latest_step() if step is None else step
    # Parameters only (partial restore): the optimiser state is never allocated for eval or export.
    abstract = {"params": jax.tree.map(ocp.utils.to_shape_dtype_struct, params)}
    restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item=abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract), partial_restore=True)))
    return graphdef, restored["state"]["params"], mesh, tokenizer, tokenizer_dir, f"{directory}/{step}"


def eval(config, flags=None):  # noqa: A001  (the command's name)
    """Score every configured eval task; write report.json/.md, roc.png and scores.jsonl."""
    from pathlib import Path

    from monitor_jax.eval.evaluator import Evaluator
    from monitor_jax.eval.report import write_report

    checkpoint = getattr(flags, "checkpoint", "") if flags else ""
    graphdef, params, mesh, tokenizer, _, what = load_params(config, checkpoint)
    evaluator = Evaluator.from_config(config, tokenizer, graphdef, mesh)
    with jax.set_mesh(mesh):
        result = evaluator.run(params, step=0, bootstrap=config.eval.bootstrap)
    name = Path(what).name if "/" in what else "base"
    out = write_report(result, {s.task.name: s.task for s in evaluator.sets}, Path(config.workdir) / "eval" / name,
                       title=f"{what}")
    if jax.process_index() == 0:
        print((out / "report.md").read_text())
        print(f"report written to {out}")
    return result


def score(config, flags):
    """Score a JSONL file with one task's prompt; write id, index, task, label (if any), score, p_positive.

    Streams: rows are read, encoded and scored as they come, and each batch's
    scores are written when it completes (so in bucket completion order; `index`
    is the row's 0-based line in the input), so the input may exceed memory.
    """
    import json

    from monitor_jax.data import tasks as registry
    from monitor_jax.data.encode import ClassificationEncoder
    from monitor_jax.data.sources import JsonlSource
    from monitor_jax.eval.scoring import Scorer

    if not (flags.input and flags.output and flags.task):
        raise ValueError("score needs --task, --input and --output")
    graphdef, params, mesh, tokenizer, _, what = load_params(config, flags.checkpoint)
    task = registry.get(flags.task)
    source = JsonlSource(flags.input)
    scorer = Scorer(graphdef, mesh, config.eval.batch_size, tuple(config.eval.buckets), tokenizer.pad_id)
    enc = ClassificationEncoder(task, tokenizer, scorer.max_length)
    examples = (enc(source[i], source.describe(i), require_label=False) for i in range(len(source)))
    writer = open(flags.output, "w") if jax.process_index() == 0 else None
    n = 0
    try:
        with jax.set_mesh(mesh):
            for s in scorer.score(params, examples):
                n += 1
                if writer is None:
                    continue
                row = source[s.index]
                out = dict(id=row.get("id", s.index), index=s.index, task=task.name, score=s.log_odds,
                           p_positive=s.p_positive)
                if task.label_field in row:
                    out["label"] = int(task.label_of(row, source.describe(s.index)))
                writer.write(json.dumps(out) + "\n")
    finally:
        if writer is not None:
            writer.close()
    if writer is not None:
        print(f"scored {n} rows of {flags.input} with {what} -> {flags.output}")
    return n


def export(config, flags):
    """Write a trained checkpoint as a Hugging Face directory (with the tokenizer)."""
    from flax import nnx

    from monitor_jax.model import save_hf

    if not flags.output:
        raise ValueError("export needs --output")
    graphdef, params, _, _, tokenizer_dir, what = load_params(config, flags.checkpoint)
    path = save_hf(nnx.merge(graphdef, params), flags.output, tokenizer=tokenizer_dir)
    if jax.process_index() == 0:
        print(f"exported {what} to {path}")
    return path
