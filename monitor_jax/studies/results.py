"""A sweep's results: one row per (run, eval set) from each run's final report, a table and figures, a summary
(each setting's mean over seeds beside each seed's value and the base model's zero-shot AUROC), and paired
differences across a grid key (per seed on the same rows, with a paired bootstrap interval of their mean).

The rows come from `WORKDIR/runs/NAME/eval/STEPS/report.json` (what `train` writes after its last step) and
the training curves from each run's `metrics.jsonl`. Unfinished runs and runs without an evaluation are
listed, never dropped silently.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sklearn import metrics as skm  # noqa: E402

from monitor_jax.errors import MetricError  # noqa: E402
from monitor_jax.eval.metrics import resampled_in_chunks, resamples  # noqa: E402
from monitor_jax.eval.results import EvalResult  # noqa: E402
from monitor_jax.studies.sweep import check_paired, grid_labels, label  # noqa: E402

METRICS = ("auroc", "tpr_at_1pct_fpr", "accuracy")
# What `eval --config=THE SWEEP'S CONFIG` writes in the sweep's work directory: the base model on the same eval
# sets. A study with eval.before=False scores it once this way instead of once a run.
ZERO_SHOT = Path("eval") / "base" / "report.json"


def collect(sweep_dir: str | Path) -> tuple[list[dict[str, Any]], dict[str, list[str]], list[str]]:
    """(rows, {grid key: its values' labels in grid order}, notes about runs without results)."""
    sweep_dir = Path(sweep_dir)
    record = json.loads((sweep_dir / "sweep.json").read_text())
    grid = {k: v for k, v, *_ in record["grid"]}
    names = {k: rest[0] for k, _, *rest in record["grid"] if rest}
    rows, notes = [], []
    for run in record["runs"]:
        report = Path(run["workdir"]) / "eval" / str(run["steps"]) / "report.json"
        if not (Path(run["workdir"]) / "checkpoints" / str(run["steps"])).is_dir():
            notes.append(f"run {run['name']} is not finished (no checkpoint at step {run['steps']})")
            continue
        if not report.is_file():
            notes.append(f"run {run['name']} has no evaluation at step {run['steps']} (stopped while evaluating: "
                         f"run the sweep again to evaluate it; or its eval.tasks is empty)")
            continue
        overrides = {k: label(run["overrides"][k], names.get(k), grid[k]) for k in grid}
        seed = run["overrides"].get("seed")
        for s in EvalResult.from_json(json.loads(report.read_text())).sets:
            row = dict(run=run["name"], **overrides, seed=seed, eval_set=s.name, domain=s.domain, heldout=s.heldout,
                       n=s.n, length_auroc=s.length_auroc)
            for m in METRICS:
                for part, v in s.metrics[m].to_json().items():
                    row[m if part == "value" else f"{m}_{part}"] = v
            rows.append(row)
    return rows, grid_labels(grid, names), notes


# ------------------------------------------------------------------ paired differences across a grid key
PAIRED_SAMPLES = 1000


def read_scores(path: Path) -> dict[str, dict[str, tuple[int, float, float]]]:
    """{eval set: {row id: (label, log-odds, P(positive))}} from a scores.jsonl (what paired_auroc_difference
    takes, one eval set of two runs at a time; also for pairing runs of different sweeps by hand)."""
    path = Path(path)
    if not path.is_file():
        raise MetricError(f"{path}: missing; the paired difference needs each run's per-row scores")
    by_set: dict[str, dict] = {}
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            by_set.setdefault(r["name"], {})[str(r["id"])] = (int(r["label"]), float(r["score"]),
                                                              float(r["p_positive"]))
    return by_set


def _set_scores(run: Mapping[str, Any], eval_set: str, cache: dict) -> dict[str, tuple[int, float, float]]:
    """One eval set's rows (read_scores) of a run's final scores.jsonl (each file read once into `cache`:
    {path: {eval set: rows}})."""
    path = Path(run["workdir"]) / "eval" / str(run["steps"]) / "scores.jsonl"
    if path not in cache:
        cache[path] = read_scores(path)
    if eval_set not in cache[path]:
        raise MetricError(f"{path}: no rows of eval set {eval_set!r}")
    return cache[path][eval_set]


def paired_auroc_difference(pairs: list[tuple[dict, dict]], samples: int = PAIRED_SAMPLES,
                            what: str = "") -> dict[str, Any]:
    """AUROC(treatment) - AUROC(baseline) for each (treatment scores, baseline scores) pair (one per seed, each
    {row id: (label, score, p)} on the same rows), their mean, and a paired bootstrap 95% interval of the mean:
    each resample draws one set of rows per seed and scores both runs of that seed on it, so what the two runs
    share (the rows) cancels; the seeds are held fixed (two or three seeds are too few to resample)."""
    per_pair, draws = [], []
    for i, (a, b) in enumerate(pairs):
        if set(a) != set(b):
            raise MetricError(f"{what}: the runs scored different rows ({len(set(a) ^ set(b))} ids in one only); "
                              f"a paired difference needs the same evaluation rows")
        ids = sorted(a)
        labels = np.array([a[k][0] for k in ids])
        if any(a[k][0] != b[k][0] for k in ids):
            raise MetricError(f"{what}: the runs gave the same row different labels")
        sa, pa = (np.array([a[k][j] for k in ids]) for j in (1, 2))
        sb, pb = (np.array([b[k][j] for k in ids]) for j in (1, 2))
        auroc_a, auroc_b = skm.roc_auc_score(labels, sa), skm.roc_auc_score(labels, sb)
        per_pair.append(dict(treatment=float(auroc_a), baseline=float(auroc_b), difference=float(auroc_a - auroc_b),
                             n=len(ids)))
        idx = resamples(labels, samples, seed=i)
        draws.append(resampled_in_chunks(labels, sa, pa, idx)["auroc"]
                     - resampled_in_chunks(labels, sb, pb, idx)["auroc"])
    low, high = np.percentile(np.mean(draws, axis=0), [2.5, 97.5])
    return dict(per_seed=per_pair, mean=float(np.mean([p["difference"] for p in per_pair])), low=float(low),
                high=float(high))


def paired(runs: Mapping[str, Mapping[str, Any]], rows: list[dict], labels: Mapping[str, list[str]], key: str,
           treatment: str, baseline: str, samples: int | None = None,
           cache: dict | None = None) -> tuple[list[dict], list[str]]:
    """For each eval set and each setting of the other grid keys: per seed, AUROC with `key` = `treatment`
    minus with `key` = `baseline` (paired_auroc_difference); `runs`: sweep.json's runs by name, `cache`: the
    scores already read (_set_scores). Returns (results, notes); a seed with only one of the two runs finished
    is named in the notes, not dropped silently."""
    cache = {} if cache is None else cache
    others = [k for k in labels if k != key]
    groups: dict[tuple, dict[Any, dict[str, str]]] = {}
    for r in rows:
        if r[key] in (treatment, baseline):
            setting = (r["eval_set"], tuple(r[k] for k in others))
            groups.setdefault(setting, {}).setdefault(r["seed"], {})[r[key]] = r["run"]
    out, notes = [], []
    for (eval_set, other), by_seed in groups.items():
        where = ", ".join(f"{k}={v}" for k, v in zip(others, other))
        seeds = sorted((s for s, d in by_seed.items() if len(d) == 2), key=lambda s: (s is None, s))
        for s, d in by_seed.items():
            if len(d) < 2:
                notes.append(f"{key}: {treatment} - {baseline} on {eval_set}{' (' + where + ')' if where else ''}, "
                             f"seed {s}: only {next(iter(d.values()))} has results")
        if not seeds:
            continue
        what = f"{key}={treatment} - {baseline}, eval set {eval_set}"
        diff = paired_auroc_difference([(_set_scores(runs[by_seed[s][treatment]], eval_set, cache),
                                         _set_scores(runs[by_seed[s][baseline]], eval_set, cache)) for s in seeds],
                                       samples or PAIRED_SAMPLES, what)
        for s, p in zip(seeds, diff["per_seed"]):
            p["seed"] = s
        out.append(dict(key=key, treatment=treatment, baseline=baseline, eval_set=eval_set,
                        others=dict(zip(others, other)), **diff))
    return out, notes


def write_paired(results: list[dict], notes: list[str], out: Path) -> str:
    """paired.csv (one row per seed and one for the mean) and paired.md; returns the markdown."""
    columns = ["key", "treatment", "baseline", "eval_set", "others", "seed", "auroc_treatment", "auroc_baseline",
               "difference", "low", "high", "n"]
    lines = ["# Paired differences", "", "AUROC with the treatment minus with the baseline, per seed on the same "
             "rows; the interval is a paired bootstrap 95% interval of the mean over seeds (rows resampled, the same "
             f"resample for both runs of a seed; seeds held fixed; {PAIRED_SAMPLES} resamples).", ""]
    with open(out / "paired.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        spec = None
        for r in results:
            if (r["key"], r["treatment"], r["baseline"]) != spec:
                lines += [""] if spec is not None else []          # a blank line ends the last table
                spec = (r["key"], r["treatment"], r["baseline"])
                lines += [f"## {r['key']}: {r['treatment']} - {r['baseline']}", "",
                          "| eval set | other settings | per seed: treatment - baseline = difference | mean "
                          "difference [95%] |", "| --- | --- | --- | --- |"]
            other = ", ".join(f"{k}={v}" for k, v in r["others"].items()) or "-"
            per_seed = "; ".join(f"seed {p['seed']}: {p['treatment']:.3f} - {p['baseline']:.3f} = "
                                 f"{p['difference']:+.3f}" for p in r["per_seed"])
            lines.append(f"| {r['eval_set']} | {other} | {per_seed} | {r['mean']:+.3f} [{r['low']:+.3f}, "
                         f"{r['high']:+.3f}] |")
            base = dict(key=r["key"], treatment=r["treatment"], baseline=r["baseline"], eval_set=r["eval_set"],
                        others=other)
            for p in r["per_seed"]:
                writer.writerow(dict(base, seed=p["seed"], auroc_treatment=p["treatment"],
                                     auroc_baseline=p["baseline"], difference=p["difference"], n=p["n"]))
            writer.writerow(dict(base, seed="mean", difference=r["mean"], low=r["low"], high=r["high"]))
        lines.append("")
    lines += [f"- {n}" for n in notes]
    text = "\n".join(lines) + "\n"
    (out / "paired.md").write_text(text)
    return text


def zero_shot(sweep_dir: Path) -> dict[str, Any]:
    """{eval set: its SetResult} of the base model's evaluation in the sweep's directory (ZERO_SHOT), or {}."""
    path = sweep_dir / ZERO_SHOT
    if not path.is_file():
        return {}
    return {s.name: s for s in EvalResult.from_json(json.loads(path.read_text())).sets}


def _vs_zero_shot(runs: list[Mapping[str, Any]], base_run: Mapping[str, Any], eval_set: str,
                  cache: dict) -> dict[str, float]:
    """The runs' (one per seed) AUROC minus the base model's on the same rows: mean and paired interval."""
    d = paired_auroc_difference([(_set_scores(r, eval_set, cache), _set_scores(base_run, eval_set, cache))
                                 for r in runs], PAIRED_SAMPLES,
                                f"{eval_set}, {', '.join(r['name'] for r in runs)} - zero-shot")
    return dict(vs_zero_shot=d["mean"], vs_zero_shot_low=d["low"], vs_zero_shot_high=d["high"])


def write_summary(rows: list[dict], labels: dict[str, list[str]], base: Mapping[str, Any], notes: list[str],
                  out: Path, runs: Mapping[str, Mapping[str, Any]] | None = None, base_dir: Path | None = None,
                  cache: dict | None = None) -> str:
    """summary.csv and summary.md: per eval set, its length-only and zero-shot AUROC (`base`, when the sweep's
    directory has it), then per setting of the grid keys the mean AUROC over seeds beside each seed's value
    (one seed, or none: the value and its bootstrap interval); and, where the base model's per-row scores are in
    `base_dir` (its eval/base), each setting's change from zero-shot: per seed, the run's AUROC minus the base
    model's on the same rows, with a paired bootstrap interval of the mean (paired_auroc_difference). `runs`:
    sweep.json's runs by name. Returns the markdown."""
    keys = list(labels)
    settings = list(dict.fromkeys(tuple(r[k] for k in keys) for r in rows))
    sets = list(dict.fromkeys(r["eval_set"] for r in rows))
    cache = {} if cache is None else cache
    # The base model's scores as _set_scores reads a run's: WORKDIR/eval/STEPS/scores.jsonl, STEPS = "base".
    base_run = dict(workdir=str(base_dir), steps=ZERO_SHOT.parent.name) if base_dir is not None else None
    base_scores = base_dir / ZERO_SHOT.parent / "scores.jsonl" if base_dir is not None else None
    if base and base_run and not base_scores.is_file():
        notes = [f"{base_scores}: missing, so no change from zero-shot"] + notes
        base_run = None
    table_notes = []
    columns = ["eval_set", "heldout", *keys, "seeds", "auroc_mean", "auroc_per_seed", "zero_shot_auroc",
               "zero_shot_low", "zero_shot_high", "vs_zero_shot", "vs_zero_shot_low", "vs_zero_shot_high",
               "length_auroc"]
    head = " | ".join(", ".join(f"{k}={v}" for k, v in zip(keys, setting)) or "runs" for setting in settings)
    rule = "| --- | --- | --- | --- | " + " | ".join("---" for _ in settings) + " |"
    lines = ["# Summary", "", "AUROC per eval set: the base model's zero-shot value (bootstrap 95%), then each "
             "setting's mean over seeds with each seed's value in brackets (one run: its bootstrap 95% interval). "
             "Paired differences between settings with their intervals: paired.md.", "",
             f"| eval set | held out | length-only | zero-shot | {head} |", rule]
    delta_lines = ["", "## Change from zero-shot", "", "Each setting's AUROC minus the base model's on the same rows: "
                   "the mean over seeds and a paired bootstrap 95% interval (rows resampled, the same resample for "
                   f"the run and the base model; seeds held fixed; {PAIRED_SAMPLES} resamples).", "",
                   f"| eval set | held out | length-only | zero-shot | {head} |", rule]
    with open(out / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        for name in sets:
            mine = [r for r in rows if r["eval_set"] == name]
            zs = base.get(name)
            if zs is not None and zs.n != mine[0]["n"]:
                table_notes.append(f"{name}: the zero-shot evaluation scored {zs.n} rows, the runs {mine[0]['n']}: "
                                   f"not the same rows, so the zero-shot value is not shown")
                zs = None
            zero = {f"zero_shot_{'auroc' if k == 'value' else k}": v
                    for k, v in zs.auroc.to_json().items()} if zs is not None else {}
            cells, deltas = [], []
            for setting in settings:
                sel = sorted((r for r in mine if tuple(r[k] for k in keys) == setting),
                             key=lambda r: (r["seed"] is None, r["seed"]))
                if not sel:
                    cells.append("-")
                    deltas.append("-")
                    continue
                mean = float(np.mean([r["auroc"] for r in sel]))
                if len(sel) == 1:
                    cells.append(_fmt(sel[0], "auroc"))
                else:
                    cells.append(f"{mean:.3f} (" + ", ".join(f"s{r['seed']} {r['auroc']:.3f}" for r in sel) + ")")
                delta = {}
                if zs is not None and base_run is not None and runs is not None:
                    try:
                        delta = _vs_zero_shot([runs[r["run"]] for r in sel], base_run, name, cache)
                    except MetricError as e:
                        table_notes.append(f"no change from zero-shot for {name} ({', '.join(map(str, setting))}): {e}")
                deltas.append(f"{delta['vs_zero_shot']:+.3f} [{delta['vs_zero_shot_low']:+.3f}, "
                              f"{delta['vs_zero_shot_high']:+.3f}]" if delta else "-")
                writer.writerow(dict(eval_set=name, heldout=mine[0]["heldout"], **dict(zip(keys, setting)),
                                     seeds=";".join(str(r["seed"]) for r in sel), auroc_mean=mean,
                                     auroc_per_seed=";".join(f"{r['auroc']:.6f}" for r in sel),
                                     length_auroc=mine[0]["length_auroc"] if np.isfinite(mine[0]["length_auroc"])
                                     else None, **zero, **delta))
            zero_cell = "-" if zs is None else zs.auroc.cell()
            length = mine[0]["length_auroc"]
            first = (f"| {name} | {'yes' if mine[0]['heldout'] else 'no'} | "
                     f"{f'{length:.3f}' if np.isfinite(length) else '-'} | {zero_cell} | ")
            lines.append(first + " | ".join(cells) + " |")
            delta_lines.append(first + " | ".join(deltas) + " |")
    if not base:
        table_notes.append(f"no zero-shot evaluation in this sweep's directory ({ZERO_SHOT}: run `eval` with the "
                           f"sweep's config and --config.workdir set to this directory)")
    lines += (delta_lines if base and base_run is not None else []) + [""] + [f"- {n}" for n in table_notes + notes]
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    return text


def _fmt(row: dict, m: str) -> str:
    v, lo, hi = row[m], row[f"{m}_low"], row[f"{m}_high"]
    return f"{v:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else "")


def write_tables(rows: list[dict], labels: dict[str, list[str]], notes: list[str], out: Path) -> None:
    keys = list(labels)
    columns = ["run", *keys, "seed", "eval_set", "domain", "heldout", "n"] + [
        f"{m}{s}" for m in METRICS for s in ("", "_low", "_high")] + ["length_auroc"]
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        for r in rows:
            writer.writerow({c: r.get(c) for c in columns})
    lines = ["# Sweep results", "", "| run | " + " | ".join(keys) + " | seed | eval set | held out | n | AUROC | "
             "TPR at 1% FPR | accuracy | length-only AUROC |", "| --- | " + " | ".join("---" for _ in keys)
             + " | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        seed = r["seed"] if r["seed"] is not None else "-"
        lines.append(f"| {r['run']} | " + " | ".join(str(r[k]) for k in keys) + f" | {seed} | {r['eval_set']} | "
                     f"{'yes' if r['heldout'] else 'no'} | {r['n']} | " + " | ".join(_fmt(r, m) for m in METRICS)
                     + f" | {r['length_auroc']:.3f} |")
    lines += ["", "Intervals: bootstrap 95% of each run's own evaluation. Length-only AUROC: the prompt's length in "
              "tokens as the score, longer = positive (far from 0.5 either way, length alone separates the set)."
              ] + [f"- {n}" for n in notes]
    (out / "results.md").write_text("\n".join(lines) + "\n")


def _numeric(labels: list[str]) -> bool:
    try:
        [float(x) for x in labels]
        return True
    except ValueError:
        return False


def curves(rows: list[dict], labels: dict[str, list[str]], key: str) -> dict[tuple, dict[str, np.ndarray]]:
    """AUROC against the numeric grid key `key`, per setting of the other grid keys (a tuple of their
    "key=value"; empty when `key` is the only one) and eval set: rows of (x, mean AUROC, mean low, mean high)
    over seeds. The other keys are kept apart, not averaged: in a normalisation x ratio grid the comparison the
    study is about is between them."""
    others = [k for k in labels if k != key]
    groups: dict[tuple, dict[str, dict[str, list[dict]]]] = {}        # setting -> eval set -> x -> its seeds' rows
    for r in rows:
        setting = tuple(f"{k}={r[k]}" for k in others)
        groups.setdefault(setting, {}).setdefault(r["eval_set"], {}).setdefault(r[key], []).append(r)

    def mean(sel: list[dict], m: str) -> float:
        return float(np.mean([r[m] for r in sel if r[m] is not None] or [np.nan]))

    return {setting: {name: np.array([(float(x), *(mean(by_x[x], m) for m in ("auroc", "auroc_low", "auroc_high")))
                                      for x in labels[key] if x in by_x])
                      for name, by_x in panel.items()}
            for setting, panel in groups.items()}


def plot_against(rows: list[dict], labels: dict[str, list[str]], key: str, path: Path,
                 base: Mapping[str, Any] | None = None) -> None:
    """AUROC against a numeric grid key: one panel per setting of the other grid keys (`curves`), one line per
    eval set (mean over seeds) with the mean bootstrap interval as a band, and each set's zero-shot AUROC
    (`base`) as a dashed line of its colour."""
    panels = curves(rows, labels, key)
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.5), sharey=True, squeeze=False)
    for ax, (setting, panel) in zip(axes[0], panels.items()):
        for k, (name, p) in enumerate(panel.items()):
            colour = f"C{k % 10}"
            ax.plot(p[:, 0], p[:, 1], marker="o", label=name, color=colour)
            if np.isfinite(p[:, 2:]).all():
                ax.fill_between(p[:, 0], p[:, 2], p[:, 3], color=colour, alpha=0.15)
            if base and name in base:
                ax.axhline(base[name].auroc.value, color=colour, lw=0.8, ls="--")
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        ax.set_xlabel(key)
        ax.set_title(", ".join(setting), fontsize=9)              # empty when `key` is the only grid key
        ax.legend(fontsize=7, loc="best")
    axes[0][0].set_ylabel("AUROC (bootstrap 95% band)")
    fig.suptitle(f"AUROC against {key}" + (" (dashed: zero-shot)" if base else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_heatmap(rows: list[dict], labels: dict[str, list[str]], path: Path) -> None:
    """Mean AUROC, training setting (the first non-numeric grid key's values, else the runs) x eval set."""
    categorical = [k for k in labels if not _numeric(labels[k])]
    key = categorical[0] if categorical else "run"
    ys = labels[key] if categorical else list(dict.fromkeys(r["run"] for r in rows))
    sets = list(dict.fromkeys(r["eval_set"] for r in rows))
    grid = np.full((len(ys), len(sets)), np.nan)
    for i, y in enumerate(ys):
        for j, s in enumerate(sets):
            sel = [r["auroc"] for r in rows if r[key] == y and r["eval_set"] == s]
            if sel:
                grid[i, j] = np.mean(sel)
    fig, ax = plt.subplots(figsize=(1.2 * len(sets) + 3, 0.5 * len(ys) + 2))
    # Centred on chance: below 0.5 (a monitor pointing the wrong way) must not look like chance.
    im = ax.imshow(grid, cmap="RdYlGn", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(sets)), sets, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(ys)), ys, fontsize=8)
    for i in range(len(ys)):
        for j in range(len(sets)):
            if np.isfinite(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", color="k", fontsize=8)
    ax.set_xlabel("eval set")
    ax.set_ylabel(key)
    ax.set_title("AUROC (mean over seeds)")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_training(sweep_dir: Path, path: Path) -> None:
    """Per run: the total loss, each classification task's loss and the instruction loss against the step."""
    record = json.loads((sweep_dir / "sweep.json").read_text())
    curves = {}
    for run in record["runs"]:
        metrics = Path(run["workdir"]) / "metrics.jsonl"
        if metrics.is_file():
            curves[run["name"]] = [m for m in map(json.loads, metrics.read_text().splitlines()) if "train/loss" in m]
    keys = sorted({k for ms in curves.values() for m in ms for k in m
                   if k == "train/loss" or k == "train/sft_loss" or k.startswith("train/cls_loss/")})
    cols = min(3, max(1, len(keys)))
    rows = max(1, math.ceil(len(keys) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.5 * rows), squeeze=False)
    # One colour per run in every panel (a run that trains one task appears in that task's panel only), and
    # one legend for the figure.
    colors = {name: plt.get_cmap("tab10" if len(curves) <= 10 else "tab20")(i % 20) for i, name in enumerate(curves)}
    for ax, key in zip(axes.flat, keys):
        for name, ms in curves.items():
            pts = [(m["step"], m[key]) for m in ms if key in m]
            if pts:
                ax.plot(*zip(*pts), color=colors[name], lw=1)
        ax.set_title(key.removeprefix("train/"), fontsize=9)
        ax.set_xlabel("step")
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    if keys:
        handles = [plt.Line2D([], [], color=colors[name], lw=1.5) for name in curves]
        fig.legend(handles, list(curves), fontsize=6, loc="lower center", ncol=min(4, len(curves)),
                   bbox_to_anchor=(0.5, 0.0))
        fig.tight_layout(rect=(0, 0.04 + 0.02 * math.ceil(len(curves) / 4), 1, 1))
    else:
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_hparams(sweep_dir: Path, rows: list[dict], labels: dict[str, list[str]]) -> None:
    """Each finished run's overrides and mean AUROC in its TensorBoard directory (the HParams plugin)."""
    from tensorboardX import SummaryWriter

    for name in dict.fromkeys(r["run"] for r in rows):
        mine = [r for r in rows if r["run"] == name]
        hparams = {k: mine[0][k] for k in labels}
        if mine[0]["seed"] is not None:
            hparams["seed"] = mine[0]["seed"]
        with SummaryWriter(str(sweep_dir / "runs" / name / "tensorboard")) as w:
            w.add_hparams(hparams, {"hparam/mean_auroc": float(np.mean([r["auroc"] for r in mine]))}, name="hparams")


def report(sweep_dir: str | Path, paired_specs=()) -> tuple[Path, list[dict], list[str]]:
    """results.csv/.md, summary.csv/.md, the figures, and for each (grid key, treatment, baseline) of
    `paired_specs` and of the sweep's own `sweep.paired` the paired differences (paired.csv/.md)."""
    sweep_dir = Path(sweep_dir)
    rows, labels, notes = collect(sweep_dir)
    record = json.loads((sweep_dir / "sweep.json").read_text())
    specs = check_paired(record.get("paired", []), labels, "sweep.paired") + check_paired(paired_specs, labels,
                                                                                          "--paired")
    out = sweep_dir / "results"
    out.mkdir(parents=True, exist_ok=True)
    write_tables(rows, labels, notes, out)
    runs, cache, base = {r["name"]: r for r in record["runs"]}, {}, zero_shot(sweep_dir)
    write_summary(rows, labels, base, notes, out, runs, sweep_dir, cache)
    if specs:
        results, paired_notes = [], []
        for spec in dict.fromkeys(specs):
            r, n = paired(runs, rows, labels, *spec, cache=cache)
            results += r
            paired_notes += n
        write_paired(results, paired_notes, out)
    else:                                   # an earlier call's comparison is not this call's result
        for stale in (out / "paired.md", out / "paired.csv"):
            stale.unlink(missing_ok=True)
    if rows:
        for key in labels:
            if _numeric(labels[key]) and len(labels[key]) > 1:
                plot_against(rows, labels, key, out / f"auroc_vs_{key.replace('.', '_')}.png", base)
        plot_heatmap(rows, labels, out / "heatmap.png")
        write_hparams(sweep_dir, rows, labels)
    plot_training(sweep_dir, out / "training_curves.png")
    return out, rows, notes
