"""`train`: train or resume the run a config describes; print the before/after AUROC table."""
from __future__ import annotations

from pathlib import Path

import jax
from flax import nnx

from monitor_jax import assemble
from monitor_jax.config import validate
from monitor_jax.errors import EXIT_OK, EXIT_PREEMPTED
from monitor_jax.train.trainer import LoopConfig, MetricsWriter, RunResult, train_loop


def train(c) -> RunResult:
    """Train (or resume, from the work directory's newest intact checkpoint) the run `c` describes."""
    validate(c, jax.device_count())
    mesh = assemble.mesh(c)
    tok, tok_dir = assemble.tokenizer(c)
    model = assemble.model(c, mesh, tok)
    graphdef, model_cfg = nnx.graphdef(model), model.cfg
    rules = model_cfg.sharding_rules
    optimizer = assemble.optimizer(c)
    state = assemble.train_state(model, optimizer, mesh)
    del model
    data_iter = assemble.data_iterator(assemble.train_data(c, tok))
    evaluator = (assemble.evaluator(c, tok, graphdef, mesh, model_cfg, check_label_mass=bool(c.model.hf_path))
                 if c.eval.tasks else None)
    mngr = assemble.checkpoint_manager(c)
    start, state = assemble.resume(c, mngr, state, data_iter)
    if start == 0 and jax.process_index() == 0:
        Path(c.workdir).mkdir(parents=True, exist_ok=True)
        (Path(c.workdir) / "config.json").write_text(c.to_json_best_effort(indent=2))
    loop = LoopConfig(steps=c.train.steps, run_steps=c.train.run_steps, log_every=c.train.log_every,
                      checkpoint_every=c.train.checkpoint_every, eval_every=c.eval.every,
                      best_metric=c.train.best_metric)
    result = train_loop(state, start, assemble.train_step(c, graphdef, optimizer), data_iter, mesh, rules, mngr,
                        lambda s: assemble.save_args(c, s, data_iter), loop, MetricsWriter(c.workdir),
                        assemble.task_names(c), evaluator, report_dir=Path(c.workdir) / "eval")
    if result.status == "finished" and c.train.export_hf:
        from monitor_jax.model import save_hf

        save_hf(nnx.merge(graphdef, result.state.params), c.train.export_hf, tokenizer=tok_dir)
    return result


def _table(before, after) -> str:
    """Per eval set: AUROC, eval loss and label mass (P(positive) + P(negative)) before and after training."""
    rows = ["| eval set | domain | held out | n | AUROC before | AUROC after | eval loss before | eval loss after | "
            "label mass before | label mass after |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    after_by = {t["name"]: t for t in (after["tasks"] if after else [])}
    fmt = lambda x: f"{x:.3f}" if x is not None else "-"  # noqa: E731
    for t in (before or after)["tasks"]:
        a, b = after_by.get(t["name"]), t if before else None
        cells = [fmt(x["metrics"]["auroc"]["value"]) if x else "-" for x in (b, a)] + \
                [fmt(x["loss"]) if x else "-" for x in (b, a)] + [fmt(x["label_mass"]) if x else "-" for x in (b, a)]
        rows.append(f"| {t['name']} | {t['domain']} | {'yes' if t['heldout'] else 'no'} | {t['n']} | "
                    + " | ".join(cells) + " |")
    return "\n".join(rows)


def run(config, flags=None) -> int:
    """EXIT_PREEMPTED after a SIGTERM/SIGINT save, so orchestrators restart the run."""
    result = train(config)
    if jax.process_index() == 0:
        print(f"\n{result.status} at step {result.step}; work directory {config.workdir}")
        if result.status == "preempted":
            print(f"run the same command again to resume from step {result.step} (exit code {EXIT_PREEMPTED})")
        if result.eval_before or result.eval_after:
            print(_table(result.eval_before, result.eval_after))
            print(f"reports (report.md, roc.png, scores.jsonl) per evaluated step in {Path(config.workdir) / 'eval'}")
    return EXIT_PREEMPTED if result.status == "preempted" else EXIT_OK
