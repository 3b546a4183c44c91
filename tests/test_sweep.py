"""Sweeps: grid -> named runs (ordinary work directories), skipped when finished, resumed when killed; the
cluster specs run the same commands; `report --sweep` tabulates and plots."""
import csv
import json
import os
import re
import runpy
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from monitor_jax.config import ConfigError, changed_keys, sweep_grid, validate
from monitor_jax.studies import sweep as sweeps

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs/paper/mixing_ratio.py"
SMALL = ["--config.train.steps=4", "--config.train.checkpoint_every=2", "--config.train.batch_size=8",
         "--config.train.log_every=1", "--config.eval.max_rows=16", "--config.eval.bootstrap=10",
         "--config.eval.batch_size=8", "--config.eval.every=0", "--config.model.config.num_layers=1",
         "--config.model.config.embed_dim=32", "--config.model.config.head_dim=8", "--config.model.config.mlp_dim=32"]


def _sweep(workdir, tokenizer, *extra, ratios=(0.5, 1.0), **kw):
    # (A tuple flag given twice is concatenated by ml_collections: the grid is given once, here.)
    cmd = [sys.executable, "-m", "monitor_jax.main", "sweep", f"--config={CONFIG}", f"--config.workdir={workdir}",
           f"--config.model.tokenizer={tokenizer}", f"--config.sweep.grid=(('data.mixing.value', {tuple(ratios)}),)",
           *SMALL, *extra]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900, **kw)


def _params(run_dir):
    import orbax.checkpoint as ocp

    return ocp.PyTreeCheckpointer().restore(Path(run_dir) / "checkpoints" / "4" / "state")["params"]


# The end-to-end sweeps train LoRA runs: a sweep resumes, skips and reports them like any run. Their runs skip
# the evaluation before training (eval.before=False: a study scores the base model once with `eval`).
LORA = ["--config.lora.rank=4", "--config.lora.alpha=8", "--config.optim.lr=1e-2", "--config.eval.before=False"]


@pytest.fixture(scope="module")
def swept(tmp_path_factory, demo_tokenizer):
    work = tmp_path_factory.mktemp("sweep") / "ratio"
    return work, _sweep(work, demo_tokenizer, *LORA)


@pytest.mark.slow
def test_a_ratio_sweep_runs_then_reports(swept, demo_tokenizer):
    work, out = swept
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    names = ["value-0.5_seed-0", "value-1_seed-0"]
    assert sorted(p.name for p in (work / "runs").iterdir()) == names
    for name in names:
        assert (work / "runs" / name / "checkpoints" / "4").is_dir()
        assert sorted(p.name for p in (work / "runs" / name / "eval").iterdir()) == ["4"]   # no step-0 report
        assert any((work / "runs" / name / "tensorboard").iterdir())

    report = subprocess.run([sys.executable, "-m", "monitor_jax.main", "report", f"--sweep={work}",
                             "--paired=data.mixing.value:1:0.5"], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    rows = list(csv.DictReader(open(work / "results" / "results.csv")))
    eval_sets = runpy.run_path(str(CONFIG))["get_config"]().eval.tasks
    assert len(rows) == 2 * len(eval_sets)
    assert {(r["run"], r["data.mixing.value"]) for r in rows} == {(names[0], "0.5"), (names[1], "1")}
    assert all(0 <= float(r["auroc"]) <= 1 and float(r["auroc_low"]) <= float(r["auroc_high"]) for r in rows)
    for png in ("auroc_vs_data_mixing_value.png", "heatmap.png", "training_curves.png"):
        data = (work / "results" / png).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 5000, png
    assert "| value-0.5_seed-0 | 0.5 | 0 | chem_harm |" in (work / "results" / "results.md").read_text()
    # The paired difference across the ratio: one seed, so one difference a set, and its interval.
    paired = list(csv.DictReader(open(work / "results" / "paired.csv")))
    assert [r["seed"] for r in paired] == ["0", "mean"] * len(eval_sets)
    by_set = {(r["run"], r["eval_set"]): float(r["auroc"]) for r in rows}
    for r in paired[::2]:
        assert float(r["difference"]) == pytest.approx(by_set[(names[1], r["eval_set"])]
                                                       - by_set[(names[0], r["eval_set"])], abs=1e-9)
    assert "## data.mixing.value: 1 - 0.5" in report.stdout
    # Per-task training metrics are in each run's metrics.jsonl (the training-curves figure reads them).
    logged = [json.loads(line) for line in open(work / "runs" / names[0] / "metrics.jsonl")]
    assert any("train/cls_loss/chem_harm" in m for m in logged)

    # A second call finds every run finished: nothing runs, no checkpoint is written.
    before = {p: p.stat().st_mtime_ns for p in work.rglob("checkpoints/*")}
    again = _sweep(work, demo_tokenizer, *LORA)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("finished already") == 2 and "exited" not in again.stdout
    assert {p: p.stat().st_mtime_ns for p in work.rglob("checkpoints/*")} == before


@pytest.mark.slow
def test_a_killed_sweep_is_completed_by_rerunning(swept, tmp_path, demo_tokenizer):
    """Kill the sweep (and its run) once the run has saved step 2; rerun: the run resumes and ends with the
    uninterrupted run's parameters."""
    work, _ = swept
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "monitor_jax.main", "sweep", f"--config={CONFIG}", f"--config.workdir={killed}",
           f"--config.model.tokenizer={demo_tokenizer}", "--config.sweep.grid=(('data.mixing.value', (0.5,)),)",
           *SMALL, *LORA]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    step2 = killed / "runs" / "value-0.5_seed-0" / "checkpoints" / "2"
    deadline = time.time() + 600
    while not step2.is_dir() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert step2.is_dir() and not (step2.parent / "4").is_dir()
    again = _sweep(killed, demo_tokenizer, *LORA, ratios=(0.5,))
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    import jax

    straight, resumed = _params(work / "runs" / "value-0.5_seed-0"), _params(killed / "runs" / "value-0.5_seed-0")
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), straight, resumed)
    assert all("['lora']" in jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(resumed)[0])

    # Killed while evaluating after its last step (the final checkpoint saved, no report): not finished; the
    # next sweep restores that step and evaluates, training nothing more.
    run = killed / "runs" / "value-0.5_seed-0"
    report = (run / "eval" / "4" / "report.json").read_text()
    shutil.rmtree(run / "eval" / "4")
    trained = (run / "metrics.jsonl").read_text().count('"train/loss"')
    again = _sweep(killed, demo_tokenizer, *LORA, ratios=(0.5,))
    assert again.returncode == 0 and "finished already" not in again.stdout, again.stdout[-2000:]
    assert json.loads((run / "eval" / "4" / "report.json").read_text()) == json.loads(report)
    assert (run / "metrics.jsonl").read_text().count('"train/loss"') == trained
    assert "finished already (step 4), skipped" in _sweep(killed, demo_tokenizer, *LORA, ratios=(0.5,)).stdout


def test_cluster_specs_run_each_run_once_with_its_local_command(tmp_path, demo_tokenizer):
    work = tmp_path / "grid"
    out = _sweep(work, demo_tokenizer, "--config.sweep.executor=slurm", "--config.sweep.seeds=(0, 1)",
                 ratios=(0.25, 0.5, 1.0))
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"sbatch {work.resolve() / 'slurm.sh'}" in out.stdout
    assert not any((work / "runs").rglob("checkpoints"))            # written, not run
    record = json.loads((work / "sweep.json").read_text())
    local = [r["command"] for r in record["runs"]]
    assert len(local) == len(set(local)) == 6
    assert local == (work / "commands.txt").read_text().splitlines()
    assert subprocess.run(["bash", "-n", str(work / "slurm.sh")]).returncode == 0
    script = (work / "slurm.sh").read_text()
    assert "#SBATCH --array=0-5" in script
    cases = dict(re.findall(r"^  (\d+)\) set -- (.*) ;;$", script, re.M))     # the run's words as the arguments
    assert [cases[str(i)] for i in range(6)] == local
    job = yaml.safe_load((work / "job.yaml").read_text())
    assert job["kind"] == "Job" and job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 6
    body = job["spec"]["template"]["spec"]["containers"][0]["command"][2]
    assert [dict(re.findall(r"^  (\d+)\) exec (.*) ;;$", body, re.M))[str(i)] for i in range(6)] == local
    # The command of a run is a plain `train` of its own config file, which holds the sweep's flags too.
    assert all(shlex.split(line)[0] == sys.executable for line in local)   # sweep.python="" : this interpreter
    run_config = shlex.split(local[0])[-1].removeprefix("--config=")
    c = runpy.run_path(run_config)["get_config"]()
    assert (c.data.mixing.value, c.seed, c.data.seed, c.train.steps) == (0.25, 0, 0, 4)
    assert c.workdir == str((work / "runs" / "value-0.25_seed-0").resolve())
    validate(c, 8)


def test_the_sweep_record_keeps_display_names_for_the_report(tmp_path, demo_tokenizer):
    """A grid over lists of sources, named by domain: sweep.json carries the names the report labels with."""
    from monitor_jax.studies.results import collect

    config = REPO / "configs/paper/transfer_matrix.py"
    cmd = [sys.executable, "-m", "monitor_jax.main", "sweep", f"--config={config}", f"--config.workdir={tmp_path}",
           f"--config.model.tokenizer={demo_tokenizer}", "--config.sweep.executor=slurm", *SMALL]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    record = json.loads((tmp_path / "sweep.json").read_text())
    domains = list(runpy.run_path(str(config))["DOMAINS"])
    assert [g[0] for g in record["grid"]] == ["data.classification"] and record["grid"][0][2] == domains
    _, labels, notes = collect(tmp_path)
    assert labels == {"data.classification": domains} and len(notes) == len(domains)   # none run yet


def test_a_started_run_whose_settings_changed_is_an_error_naming_it_and_the_key(tmp_path, demo_tokenizer):
    """The rerun exits 2 naming the run and the changed key, and leaves its config.py and checkpoints alone;
    --rerun_changed deletes it and writes it again with the new settings."""
    work = tmp_path / "changed"
    assert _sweep(work, demo_tokenizer, "--config.sweep.executor=slurm").returncode == 0   # written, not run
    run, fresh = work / "runs" / "value-0.5_seed-0", work / "runs" / "value-1_seed-0"
    (run / "checkpoints" / "4").mkdir(parents=True)                                       # as if it had finished
    written = {f: (f.read_text(), f.stat().st_mtime_ns) for f in (run / "config.py", run / sweeps.RECORD)}
    again = _sweep(work, demo_tokenizer, "--config.optim.lr=0.123")
    assert again.returncode == 2, again.stdout[-2000:] + again.stderr[-3000:]
    error = " ".join(again.stderr.split())
    assert "run value-0.5_seed-0: optim.lr" in error and "value-1_seed-0" not in error   # that one never started
    assert "new work directory" in error and "--rerun_changed" in error
    assert {f: (f.read_text(), f.stat().st_mtime_ns) for f in written} == written
    assert (run / "checkpoints" / "4").is_dir() and "finished already" not in again.stdout

    rerun = _sweep(work, demo_tokenizer, "--config.optim.lr=0.123", "--config.sweep.executor=slurm", "--rerun_changed")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "run value-0.5_seed-0: its settings changed (optim.lr); deleting" in rerun.stdout
    assert not (run / "checkpoints").exists()
    for d in (run, fresh):
        assert runpy.run_path(str(d / "config.py"))["get_config"]().optim.lr == 0.123


def test_changed_keys_are_dotted_and_sorted():
    old = {"optim": {"lr": 1e-3, "b1": 0.9}, "seed": 0, "eval": {"tasks": [{"task": "a"}]}, "gone": 1}
    new = {"optim": {"lr": 5e-4, "b1": 0.9}, "seed": 0, "eval": {"tasks": [{"task": "b"}]}, "added": {"x": 1}}
    assert changed_keys(old, new) == ["added", "eval.tasks", "gone", "optim.lr"]
    assert changed_keys(old, old) == []


def test_run_names_are_stable_and_distinct():
    runs = sweeps.expand({"data.mixing.value": [0.25, 1.0], "loss.cls_weight.value": [1.0]}, seeds=[3])
    assert [r.name for r in runs] == ["mixing-value-0.25_cls_weight-value-1_seed-3",
                                      "mixing-value-1_cls_weight-value-1_seed-3"]
    sources = [[{"task": "chem_harm"}], [{"task": "cyber_harm"}]]
    runs = sweeps.expand({"data.classification": sources}, names={"data.classification": ["chem", "cyber"]})
    assert [r.name for r in runs] == ["classification-chem", "classification-cyber"]
    assert runs[1].overrides == {"data.classification": sources[1]}


def test_a_sweep_of_seeds_alone_is_one_run_per_seed():
    c = runpy.run_path(str(REPO / "configs/paper/prompt_change.py"))["get_config"]()
    grid, names = sweep_grid(c)
    runs = sweeps.expand(grid, list(c.sweep.seeds), names)
    assert (grid, [r.name for r in runs]) == ({}, ["seed-0", "seed-1"])
    assert runs[1].overrides == {"seed": 1, "data.seed": 1}


@pytest.mark.parametrize("grid, message", [
    ((), "sweep.grid and sweep.seeds are both empty"),
    ([("train.stepz", (1, 2))], "config key train.stepz does not exist"),
    ([("train.steps", ("a", "b"))], "train.steps='a'"),
    ([("train.steps", (1, 2), ("one",))], "sweep.grid[0]: the names ('one',) must be one non-empty string"),
    ([("train.steps", 5)], "sweep.grid[0]=('train.steps', 5) must be (config key, [values])"),
])
def test_bad_grids_are_config_errors_naming_the_key(grid, message):
    c = runpy.run_path(str(CONFIG))["get_config"]()
    c.sweep.grid, c.sweep.seeds = tuple(grid), ()
    with pytest.raises(ConfigError, match=re.escape(message)):
        sweep_grid(c)


def test_report_labels_categorical_values_and_lists_unfinished_runs(tmp_path):
    """A transfer-matrix-like sweep (lists of sources named by domain): rows and the heatmap use the names;
    a run without its final checkpoint is listed, not dropped silently."""
    from monitor_jax.studies.results import report

    sources = [[{"task": "chem_harm"}], [{"task": "cyber_harm"}], [{"task": "imdb"}]]
    runs = sweeps.expand({"data.classification": sources}, names={"data.classification": ["chem", "cyber", "sent"]})
    record = dict(config="x.py", flags={}, grid=[["data.classification", sources, ["chem", "cyber", "sent"]]],
                  seeds=[], runs=[])
    for k, r in enumerate(runs):
        workdir = tmp_path / "runs" / r.name
        record["runs"].append(dict(name=r.name, overrides=r.overrides, workdir=str(workdir), steps=4, command=""))
        if k == 2:
            continue                                        # never finished
        (workdir / "checkpoints" / "4").mkdir(parents=True)
        (workdir / "eval" / "4").mkdir(parents=True)
        metric = lambda v: dict(value=v, low=v - 0.05, high=v + 0.05)  # noqa: E731
        tasks = [dict(name=name, domain=name, heldout=name != r.name.split("-")[-1], n=100,
                      metrics=dict(auroc=metric(0.6 + 0.1 * k + 0.01 * j), tpr_at_1pct_fpr=metric(0.1),
                                   accuracy=metric(0.55)))
                 for j, name in enumerate(("chem", "cyber"))]
        (workdir / "eval" / "4" / "report.json").write_text(json.dumps(dict(tasks=tasks)))
    (tmp_path / "sweep.json").write_text(json.dumps(record))
    out, rows, notes = report(tmp_path)
    assert [(r["data.classification"], r["eval_set"], round(r["auroc"], 2)) for r in rows] == [
        ("chem", "chem", 0.6), ("chem", "cyber", 0.61), ("cyber", "chem", 0.7), ("cyber", "cyber", 0.71)]
    assert notes == ["run classification-sent is not finished (no checkpoint at step 4)"]
    assert "run classification-sent is not finished" in (out / "results.md").read_text()
    assert (out / "heatmap.png").read_bytes().startswith(b"\x89PNG")
    assert not list(out.glob("auroc_vs_*.png"))            # no numeric grid key to plot against


def test_auroc_against_a_numeric_key_keeps_the_other_keys_settings_apart(tmp_path):
    """A normalisation x ratio grid: the AUROC-against-ratio curves are one panel per normalisation, each the mean
    over seeds, never the two normalisations averaged (which hid the comparison the dilution study is about)."""
    from monitor_jax.studies.results import curves, plot_against

    labels = {"loss.normalization": ["per_source", "pooled"], "data.mixing.value": ["0.25", "0.75"]}
    rows, auroc = [], {}
    for norm in labels["loss.normalization"]:
        for r in labels["data.mixing.value"]:
            for seed in (0, 1):
                v = 0.5 + 0.2 * (norm == "per_source") + 0.1 * float(r) + 0.02 * seed
                auroc.setdefault((norm, r), []).append(v)
                rows.append({"loss.normalization": norm, "data.mixing.value": r, "seed": seed, "eval_set": "chem",
                             "auroc": v, "auroc_low": v - 0.1, "auroc_high": v + 0.1})
    got = curves(rows, labels, "data.mixing.value")
    assert list(got) == [("loss.normalization=per_source",), ("loss.normalization=pooled",)]
    for norm in labels["loss.normalization"]:
        p = got[(f"loss.normalization={norm}",)]["chem"]
        assert p[:, 0].tolist() == [0.25, 0.75]
        np.testing.assert_allclose(p[:, 1], [np.mean(auroc[(norm, r)]) for r in ("0.25", "0.75")])
        np.testing.assert_allclose(p[:, 3] - p[:, 2], 0.2)
    assert list(curves(rows, {"data.mixing.value": ["0.25", "0.75"]}, "data.mixing.value")) == [()]
    plot_against(rows, labels, "data.mixing.value", tmp_path / "a.png")
    assert (tmp_path / "a.png").read_bytes().startswith(b"\x89PNG")


def _fake_sweep(root, seeds=(0, 1), n=60, skip=()):
    """A finished sweep's files as `sweep` and `train` write them: a grid over train.steps (300, 375) x seeds,
    each run's report.json and scores.jsonl (two eval sets of `n` rows, the same ids in every run)."""
    rng = np.random.default_rng(7)
    runs = sweeps.expand({"train.steps": [300, 375]}, list(seeds))
    record = dict(config="x.py", flags={}, grid=[["train.steps", [300, 375]]], seeds=list(seeds), runs=[])
    labels = np.tile([0, 1], n // 2)
    for r in runs:
        workdir = root / "runs" / r.name
        record["runs"].append(dict(name=r.name, overrides=r.overrides, workdir=str(workdir), steps=4, command=""))
        if r.name in skip:
            continue
        (workdir / "checkpoints" / "4").mkdir(parents=True)
        (workdir / "eval" / "4").mkdir(parents=True)
        signal_ = 0.5 + 0.5 * (r.overrides["train.steps"] == 375)
        tasks, lines = [], []
        for name in ("chem", "inverted"):
            score = labels * signal_ + rng.normal(size=n)
            metric = lambda v: dict(value=v, low=v, high=v)  # noqa: E731
            tasks.append(dict(name=name, domain=name, heldout=False, n=n,
                              metrics=dict(auroc=metric(float(roc_auc_score(labels, score))),
                                           tpr_at_1pct_fpr=metric(0.1), accuracy=metric(0.5))))
            lines += [json.dumps(dict(id=f"{name}-{i}", name=name, task="t", label=int(labels[i]), score=float(score[i]),
                                      p_positive=float(1 / (1 + np.exp(-score[i]))), truncated=0)) for i in range(n)]
        (workdir / "eval" / "4" / "report.json").write_text(json.dumps(dict(tasks=tasks)))
        (workdir / "eval" / "4" / "scores.jsonl").write_text("\n".join(lines) + "\n")
    (root / "sweep.json").write_text(json.dumps(record))
    return record


def _scores(run, name):
    rows = [json.loads(line) for line in open(Path(run["workdir"]) / "eval" / "4" / "scores.jsonl")]
    rows = sorted((r for r in rows if r["name"] == name), key=lambda r: r["id"])
    return np.array([r["label"] for r in rows]), np.array([r["score"] for r in rows])


def test_the_paired_difference_is_per_seed_on_the_same_rows_with_a_paired_bootstrap(tmp_path, monkeypatch):
    """Per seed, AUROC(375 steps) - AUROC(300) from the runs' own scores; the mean over seeds; the interval
    recomputed directly: per resample, the same rows for both runs of a seed (scikit-learn's AUROC on each),
    averaged over the seeds, 2.5th and 97.5th percentiles."""
    from monitor_jax.eval.metrics import resamples
    from monitor_jax.studies import results

    samples = 300          # the direct computation below calls scikit-learn 4 x samples times a set
    monkeypatch.setattr(results, "PAIRED_SAMPLES", samples)
    record = _fake_sweep(tmp_path)
    report = results.report
    out, _, _ = report(tmp_path, [("train.steps", "375", "300")])
    rows = list(csv.DictReader(open(out / "paired.csv")))
    runs = {(r["overrides"]["train.steps"], r["overrides"]["seed"]): r for r in record["runs"]}
    for name in ("chem", "inverted"):
        mine = [r for r in rows if r["eval_set"] == name]
        assert [r["seed"] for r in mine] == ["0", "1", "mean"]
        draws, diffs = [], []
        for seed in (0, 1):
            y, treated = _scores(runs[(375, seed)], name)
            _, base = _scores(runs[(300, seed)], name)
            diff = roc_auc_score(y, treated) - roc_auc_score(y, base)
            assert float(mine[seed]["difference"]) == pytest.approx(diff, abs=1e-12)
            assert float(mine[seed]["auroc_treatment"]) == pytest.approx(roc_auc_score(y, treated), abs=1e-12)
            diffs.append(diff)
            draws.append([roc_auc_score(y[i], treated[i]) - roc_auc_score(y[i], base[i])
                          for i in resamples(y, samples, seed=seed)])
        low, high = np.percentile(np.mean(draws, axis=0), [2.5, 97.5])
        assert float(mine[2]["difference"]) == pytest.approx(np.mean(diffs), abs=1e-12)
        assert (float(mine[2]["low"]), float(mine[2]["high"])) == pytest.approx((low, high), abs=1e-9)
        assert low < np.mean(diffs) < high
    text = (out / "paired.md").read_text()
    assert "## train.steps: 375 - 300" in text and "| chem | - | seed 0: " in text

    # Without a comparison the next report leaves no paired table from the last one; the sweep's own
    # sweep.paired (recorded in sweep.json) is one.
    report(tmp_path)
    assert not (out / "paired.md").exists()
    (tmp_path / "sweep.json").write_text(json.dumps(dict(record, paired=[["train.steps", "375", "300"]])))
    report(tmp_path)
    assert (out / "paired.md").read_text() == text


def test_the_summary_shows_each_settings_seeds_and_mean_beside_the_zero_shot_auroc(tmp_path):
    """summary.csv/.md: per eval set and setting, each seed's AUROC (the runs' own, recomputed here from their
    scores) and their mean; the base model's zero-shot AUROC from the sweep's eval/base/report.json, not shown
    where it scored other rows; its absence is said."""
    from monitor_jax.studies.results import report

    record = _fake_sweep(tmp_path)
    out, _, _ = report(tmp_path)
    assert "no zero-shot evaluation in this sweep's directory" in (out / "summary.md").read_text()
    (tmp_path / "eval" / "base").mkdir(parents=True)
    tasks = [dict(name=name, domain=name, heldout=False, n=n,
                  metrics={m: dict(value=0.45, low=0.3, high=0.6) for m in ("auroc", "tpr_at_1pct_fpr", "accuracy")})
             for name, n in (("chem", 60), ("inverted", 30))]
    (tmp_path / "eval" / "base" / "report.json").write_text(json.dumps(dict(tasks=tasks)))
    out, _, _ = report(tmp_path)
    assert "eval/base/scores.jsonl: missing, so no change from zero-shot" in (out / "summary.md").read_text()
    labels, base_score = np.tile([0, 1], 30), np.random.default_rng(3).normal(size=60)
    (tmp_path / "eval" / "base" / "scores.jsonl").write_text("".join(
        json.dumps(dict(id=f"chem-{i}", name="chem", task="t", label=int(labels[i]), score=float(base_score[i]),
                        p_positive=0.5, truncated=0)) + "\n" for i in range(60)))
    out, _, _ = report(tmp_path)
    rows = list(csv.DictReader(open(out / "summary.csv")))
    runs = {(r["overrides"]["train.steps"], r["overrides"]["seed"]): r for r in record["runs"]}
    assert [(r["eval_set"], r["train.steps"]) for r in rows] == [
        ("chem", "300"), ("chem", "375"), ("inverted", "300"), ("inverted", "375")]
    for r in rows:
        per_seed = [roc_auc_score(*_scores(runs[(int(r["train.steps"]), s)], r["eval_set"])) for s in (0, 1)]
        assert r["seeds"] == "0;1"
        assert [float(v) for v in r["auroc_per_seed"].split(";")] == pytest.approx(per_seed, abs=1e-6)
        assert float(r["auroc_mean"]) == pytest.approx(np.mean(per_seed), abs=1e-12)
        assert r["zero_shot_auroc"] == ("0.45" if r["eval_set"] == "chem" else "")
        if r["eval_set"] == "chem":         # the change from zero-shot: the same rows' base scores, per seed
            change = np.mean(per_seed) - roc_auc_score(labels, base_score)
            assert float(r["vs_zero_shot"]) == pytest.approx(change, abs=1e-12)
            assert float(r["vs_zero_shot_low"]) < change < float(r["vs_zero_shot_high"])
        else:
            assert r["vs_zero_shot"] == ""
    text = (out / "summary.md").read_text()
    assert "## Change from zero-shot" in text
    assert "| chem | no | - | 0.450 [0.300, 0.600] | " in text      # length-only: not in these reports
    assert "| inverted | no | - | - | " in text
    assert "inverted: the zero-shot evaluation scored 30 rows, the runs 60: not the same rows" in text


def test_a_paired_difference_names_what_is_missing_or_wrong(tmp_path):
    from monitor_jax.errors import MetricError
    from monitor_jax.studies.results import report

    _fake_sweep(tmp_path, skip=("steps-375_seed-1",))
    out, _, _ = report(tmp_path, [("train.steps", "375", "300")])
    assert "seed 1: only steps-300_seed-1 has results" in (out / "paired.md").read_text()
    assert [r["seed"] for r in csv.DictReader(open(out / "paired.csv"))][:2] == ["0", "mean"]
    with pytest.raises(ConfigError, match=r"--paired\[0\]: '400' is not one of train.steps's values .*300, 375"):
        report(tmp_path, [("train.steps", "400", "300")])
    with pytest.raises(ConfigError, match=r"--paired\[0\]: 'lr' is not a grid key of this sweep \(train.steps\)"):
        report(tmp_path, [("lr", "1", "2")])
    with pytest.raises(ConfigError, match=r"sweep.paired\[0\]=\('train.steps', '375'\) must be \(grid key, "):
        sweeps.check_paired([("train.steps", "375")], {"train.steps": ["300", "375"]}, "sweep.paired")
    scores = tmp_path / "runs" / "steps-375_seed-0" / "eval" / "4" / "scores.jsonl"
    scores.write_text("\n".join(scores.read_text().splitlines()[1:]) + "\n")
    with pytest.raises(MetricError, match="the runs scored different rows"):
        report(tmp_path, [("train.steps", "375", "300")])
