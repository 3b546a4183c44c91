"""Reports: a per-task table (JSON and Markdown), one ROC plot with every task, per-row scores (JSONL)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import numpy as np

HEADLINE = ("auroc", "average_precision", "accuracy", "tpr_at_1pct_fpr", "tpr_at_5pct_fpr", "brier", "ece")


def _prompt(messages) -> str:
    return " / ".join(f"{role}: {text}" for role, text in messages)


def _finite_or_null(x: Any) -> Any:
    """JSON has no NaN: a metric that is undefined (an interval without bootstrap) is written as null."""
    if isinstance(x, dict):
        return {k: _finite_or_null(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite_or_null(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if np.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def write_report(result: dict[str, Any], out_dir: str | Path, title: str = "", source: str = "") -> Path:
    """Writes report.json, report.md, roc.png and scores.jsonl into `out_dir` (process 0); returns it.
    With thinking or summarization sets, also roc_by_domain.png (each domain's curves, by mode).

    `result` is `Evaluator.run`'s; `title` names what was evaluated (e.g. "checkpoint step 450"); `source` is
    where its parameters came from. `eval` and every evaluation inside `train` write through here.
    """
    out = Path(out_dir)
    if jax.process_index() != 0:
        return out
    out.mkdir(parents=True, exist_ok=True)
    table = [dict(name=t["name"], task=t["task"], domain=t["domain"], heldout=t["heldout"],
                  mode=t.get("mode", "single_token"), prompt=_prompt(t["prompt"]), positive=t["positive"],
                  negative=t["negative"], n=t["n"], truncated=t["truncated"], label_mass=t["label_mass"],
                  loss=t["loss"], metrics=t["metrics"], **({"thinking": t["thinking"]} if "thinking" in t else {}),
                  **({k: t[k] for k in ("judge", "judge_task", "judge_truncated")} if "judge" in t else {}))
             for t in result["tasks"]]
    report = dict(title=title, source=source, step=result["step"], tasks=table, summary=result["flat"])
    (out / "report.json").write_text(json.dumps(_finite_or_null(report), indent=2, allow_nan=False))
    lines = [f"# {title or 'Evaluation'}", "", f"Parameters: {source or title}; training step {result['step']}.", "",
             "| eval set | domain | held out | n | truncated | label mass | " + " | ".join(HEADLINE) + " |",
             "| --- | --- | --- | --- | --- | --- | " + " | ".join("---" for _ in HEADLINE) + " |"]
    for row in table:
        cells = []
        for k in HEADLINE:
            m = row["metrics"][k]
            cells.append(f"{m['value']:.3f}" + (f" [{m['low']:.3f}, {m['high']:.3f}]" if np.isfinite(m["low"]) else ""))
        lines.append(f"| {row['name']} | {row['domain']} | {'yes' if row['heldout'] else 'no'} | {row['n']} | "
                     f"{row['truncated']} | {row['label_mass']:.3f} | " + " | ".join(cells) + " |")
    thinking = [row for row in table if row["mode"] == "thinking"]
    if thinking:
        lines += ["", "Thinking mode (the monitor reasons, then is scored at the answer position after its "
                      "reasoning):", "",
                  "| eval set | n | reached the marker | cut by the budget | mean reasoning tokens | "
                  "wrote a label after the marker | free-text answer agrees with the score |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for row in thinking:
            th = row["thinking"]
            agree = f"{th['answer_agreement']:.3f}" if np.isfinite(th["answer_agreement"]) else "-"
            lines.append(f"| {row['name']} | {row['n']} | {th['reached_marker']} | {th['cut_by_budget']} | "
                         f"{th['mean_reasoning_tokens']:.1f} | {th['answered']} | {agree} |")
    judged = [row for row in table if row["mode"] == "summarize"]
    if judged:
        lines += ["", "Summarization (the monitor summarizes each input; the judge scores the summary alone, "
                      "against the input's label):", "",
                  "| eval set | n | judge | judge task | summaries cut to fit the judge |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {row['name']} | {row['n']} | {row['judge']} | {row['judge_task']} | {row['judge_truncated']} |"
                  for row in judged]
    lines += ["", "Intervals: bootstrap 95%. Truncated: rows whose content was shortened to fit the largest bucket. "
              "Label mass: mean P(positive) + P(negative) over the vocabulary at the answer position.",
              "", "Prompts:", ""] + [f"- `{row['name']}` (task `{row['task']}`): {row['prompt']!r} → "
                                     f"{row['positive']!r} / {row['negative']!r}" for row in table]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    with open(out / "scores.jsonl", "w") as f:
        for t in result["tasks"]:
            for i, rid in enumerate(t["ids"]):
                row = dict(id=rid, name=t["name"], task=t["task"], label=int(t["labels"][i]),
                           score=float(t["log_odds"][i]), p_positive=float(t["p_positive"][i]),
                           truncated=int(t["truncated_tokens"][i]))
                if "reasoning" in t:   # thinking mode: what the monitor wrote before it was scored
                    row.update(reasoning=t["reasoning"][i], free_answer=int(t["free_answer"][i]))
                if "summaries" in t:   # summarization: what the judge read
                    row.update(summary=t["summaries"][i])
                f.write(json.dumps(row, allow_nan=False) + "\n")
    plot_roc(result, out / "roc.png", title)
    if any(t.get("mode", "single_token") != "single_token" for t in result["tasks"]):
        plot_roc_by_domain(result, out / "roc_by_domain.png", title)
    return out


MODE_STYLE = {"single_token": ("-", "single-token"), "thinking": ("--", "thinking"),
              "summarize": (":", "summary judge")}


def plot_roc_by_domain(result: dict[str, Any], path: Path, title: str = "") -> None:
    """One panel per domain: its single-token, thinking and summary-judge curves side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    domains = list(dict.fromkeys(t["domain"] for t in result["tasks"]))
    fig, axes = plt.subplots(1, len(domains), figsize=(4.5 * len(domains), 4.5), squeeze=False)
    for ax, domain in zip(axes[0], domains):
        for t in (t for t in result["tasks"] if t["domain"] == domain):
            fpr, tpr, _ = roc_curve(t["labels"], t["log_odds"])
            style, what = MODE_STYLE[t.get("mode", "single_token")]
            ax.plot(fpr, tpr, style, label=f"{what}: {t['name']} ({t['metrics']['auroc']['value']:.3f})")
        ax.plot([0, 1], [0, 1], ":", color="grey")
        ax.set_title(domain, fontsize=10)
        ax.set_xlabel("false positive rate")
        ax.legend(loc="lower right", fontsize=7)
    axes[0][0].set_ylabel("true positive rate")
    fig.suptitle(title or f"ROC by domain at training step {result['step']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_roc(result: dict[str, Any], path: Path, title: str = "") -> None:
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fig, ax = plt.subplots(figsize=(6, 6))
    for t in result["tasks"]:
        fpr, tpr, _ = roc_curve(t["labels"], t["log_odds"])
        style = "-" if t["heldout"] else "--"
        mode = {"thinking": " thinking", "summarize": " summary judge"}.get(t.get("mode"), "")
        ax.plot(fpr, tpr, style, label=f"{t['name']}{mode} (AUROC {t['metrics']['auroc']['value']:.3f})")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    # Wrapped: a long checkpoint path must not run off the figure.
    heading = f"{title or 'ROC at training step ' + str(result['step'])}; solid: held-out domains"
    ax.set_title("\n".join(textwrap.wrap(heading, 60)), fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
