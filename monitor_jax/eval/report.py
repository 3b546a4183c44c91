"""Reports: a per-set table (JSON and Markdown), one ROC plot with every set, per-row scores (JSONL)."""
from __future__ import annotations

import json
from pathlib import Path

import jax

from monitor_jax.eval import modes
from monitor_jax.eval.results import EvalResult

HEADLINE = ("auroc", "average_precision", "accuracy", "tpr_at_1pct_fpr", "tpr_at_5pct_fpr", "brier", "ece")


def write_report(result: EvalResult, out_dir: str | Path, title: str = "", source: str = "") -> Path:
    """Writes report.json, report.md, roc.png and scores.jsonl into `out_dir` (process 0); returns it.
    With sets of another mode than the default, also roc_by_domain.png (each domain's curves, by mode).

    `result` is `Evaluator.run`'s; `title` names what was evaluated (e.g. "checkpoint step 450"); `source` is
    where its parameters came from. `eval` and every evaluation inside `train` write through here.
    """
    out = Path(out_dir)
    if jax.process_index() != 0:
        return out
    out.mkdir(parents=True, exist_ok=True)
    report = dict(title=title, source=source, **result.to_json())
    (out / "report.json").write_text(json.dumps(report, indent=2, allow_nan=False))
    lines = [f"# {title or 'Evaluation'}", "", f"Parameters: {source or title}; training step {result.step}.", "",
             "| eval set | domain | held out | n | truncated | label mass | " + " | ".join(HEADLINE)
             + " | length-only AUROC |", "| --- | --- | --- | --- | --- | --- | "
             + " | ".join("---" for _ in HEADLINE) + " | --- |"]
    for s in result.sets:
        cells = [s.metrics[k].cell() for k in HEADLINE]
        lines.append(f"| {s.name} | {s.domain} | {'yes' if s.heldout else 'no'} | {s.n} | "
                     f"{s.truncated} | {s.label_mass:.3f} | " + " | ".join(cells) + f" | {s.length_auroc:.3f} |")
    for mode in modes.registered():   # each mode's own section, over its sets
        mine = [s for s in result.sets if s.mode == mode.name]
        if mine:
            lines += mode.report_lines(mine)
    lines += ["", "Intervals: bootstrap 95%. Truncated: rows whose content was shortened to fit the largest bucket. "
              "Label mass: mean P(positive) + P(negative) over the vocabulary at the answer position. Length-only "
              "AUROC: the prompt's length in tokens (before any cut) as the score, longer = positive; far from 0.5 "
              "either way, length alone separates the set.",
              "", "Prompts:", ""] + [f"- `{s.name}` (task `{s.task}`): {s.prompt!r} → {s.positive!r} / "
                                     f"{s.negative!r}" for s in result.sets]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    with open(out / "scores.jsonl", "w") as f:
        for s in result.sets:
            for row in s.rows():
                f.write(json.dumps(row, allow_nan=False) + "\n")
    plot_roc(result, out / "roc.png", title)
    if any(s.mode != modes.DEFAULT for s in result.sets):
        plot_roc_by_domain(result, out / "roc_by_domain.png", title)
    return out


def plot_roc_by_domain(result: EvalResult, path: Path, title: str = "") -> None:
    """One panel per domain: its sets' curves side by side, styled by mode (single-token, thinking, summary
    judge, ...)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    domains = list(dict.fromkeys(s.domain for s in result.sets))
    fig, axes = plt.subplots(1, len(domains), figsize=(4.5 * len(domains), 4.5), squeeze=False)
    for ax, domain in zip(axes[0], domains):
        for s in (s for s in result.sets if s.domain == domain):
            fpr, tpr, _ = roc_curve(s.scores.labels, s.scores.log_odds)
            mode = modes.get(s.mode)
            ax.plot(fpr, tpr, mode.line_style, label=f"{mode.legend}: {s.name} ({s.auroc.value:.3f})")
        ax.plot([0, 1], [0, 1], ":", color="grey")
        ax.set_title(domain, fontsize=10)
        ax.set_xlabel("false positive rate")
        ax.legend(loc="lower right", fontsize=7)
    axes[0][0].set_ylabel("true positive rate")
    fig.suptitle(title or f"ROC by domain at training step {result.step}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_roc(result: EvalResult, path: Path, title: str = "") -> None:
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fig, ax = plt.subplots(figsize=(6, 6))
    for s in result.sets:
        fpr, tpr, _ = roc_curve(s.scores.labels, s.scores.log_odds)
        style = "-" if s.heldout else "--"
        ax.plot(fpr, tpr, style, label=f"{s.name}{modes.get(s.mode).roc_label} (AUROC {s.auroc.value:.3f})")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    # Wrapped: a long checkpoint path must not run off the figure.
    heading = f"{title or 'ROC at training step ' + str(result.step)}; solid: held-out domains"
    ax.set_title("\n".join(textwrap.wrap(heading, 60)), fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
