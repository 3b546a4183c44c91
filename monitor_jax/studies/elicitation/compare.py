"""The elicitation report: per eval set, AUROC of zero-shot single-token, zero-shot thinking, elicited
single-token and (when the unlabeled source had labels) supervised single-token, with bootstrap intervals."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from monitor_jax.eval.results import EvalResult, SetResult

COLUMNS = (("zero_shot", "zero-shot single-token"), ("zero_shot_thinking", "zero-shot thinking"),
           ("elicited", "elicited single-token"), ("supervised", "supervised single-token"))


def _sets(report: dict | EvalResult | None) -> dict[str, SetResult]:
    """An evaluation's sets by name (a report.json read back, or the result itself)."""
    if report is None:
        return {}
    return (report if isinstance(report, EvalResult) else EvalResult.from_json(report)).by_name()


def _auroc(sets: dict[str, SetResult], name: str | None) -> dict[str, Any] | None:
    s = sets.get(name)
    return dict(s.auroc.to_json(), n=s.n) if s else None


def _cell(m: dict | None) -> str:
    if m is None:
        return "-"
    interval = f" [{m['low']:.3f}, {m['high']:.3f}]" if m.get("low") is not None else ""
    return f"{m['value']:.3f}{interval}"


def comparison(pairs: Sequence[tuple[str, str | None]], zero_shot: dict | EvalResult, elicited: dict | EvalResult,
               supervised: dict | EvalResult | None) -> list[dict[str, Any]]:
    """One row per single-token eval set; `pairs` gives each its thinking set over the same rows (or None).
    The evaluations are their report.json (as read back) or the results themselves."""
    zero, elicit, superv = _sets(zero_shot), _sets(elicited), _sets(supervised)
    rows = []
    for name, thinking in pairs:
        s = zero[name]
        rows.append(dict(name=name, domain=s.domain, heldout=s.heldout, n=s.n, thinking_set=thinking,
                         zero_shot=_auroc(zero, name), zero_shot_thinking=_auroc(zero, thinking),
                         elicited=_auroc(elicit, name), supervised=_auroc(superv, name)))
    return rows


def write(out_dir: str | Path, rows: list[dict[str, Any]], pseudo: dict[str, Any], notes: Sequence[str] = ()) -> Path:
    """report.json and report.md in `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(dict(sets=rows, pseudo_labels=pseudo), indent=2, allow_nan=False))
    lines = ["# Unsupervised elicitation", "",
             f"Pseudo-labels: {pseudo['kept']} of {pseudo['rows']} unlabeled rows kept "
             f"({pseudo['positive']} positive, {pseudo['negative']} negative; positive share "
             f"{pseudo['positive_share']:.3f}); confidence filter |log-odds| >= {pseudo['threshold']:.3f} "
             f"(keep_quantile {pseudo['keep_quantile']}); {pseudo['undecided']} undecided (log-odds 0). "
             f"Reasoning reached the answer marker in {pseudo['reached_marker']} rows, "
             f"{pseudo['cut_by_budget']} were cut by the budget.", ""]
    if pseudo.get("accuracy") is not None:
        lines += [f"Against the source's own labels (read only for this line and the supervised run): pseudo-label "
                  f"accuracy {pseudo['accuracy']:.3f} on the kept rows, AUROC of the thinking log-odds "
                  f"{pseudo['auroc']:.3f} on all rows.", ""]
    lines += ["| eval set | domain | held out | n | " + " | ".join(title for _, title in COLUMNS) + " |",
              "| --- | --- | --- | --- | " + " | ".join("---" for _ in COLUMNS) + " |"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['domain']} | {'yes' if r['heldout'] else 'no'} | {r['n']} | "
                     + " | ".join(_cell(r[key]) for key, _ in COLUMNS) + " |")
    mean = {key: [r[key]["value"] for r in rows if r[key] is not None] for key, _ in COLUMNS}
    lines.append("| mean | | | | " + " | ".join(f"{np.mean(v):.3f}" if v else "-" for v in mean.values()) + " |")
    lines += ["", "AUROC with bootstrap 95% intervals. Zero-shot: the starting model. Thinking: it reasons first and "
                  "is scored after the answer marker. Elicited: single-token training on the pseudo-labels. "
                  "Supervised: the same training on the same rows with their true labels (when the source has them).",
              *[f"\n{n}" for n in notes]]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return out
