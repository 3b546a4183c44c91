"""Nothing silent: user errors are one line and exit 2, no wrong result exits 0, checkpoints are found and
checked, corrupt ones are named (and skipped on resume), reports say which step they are for.

The CLI runs in-process (`monitor_jax.main.run` parses into fresh flags on every call).
"""
import json
import logging
import math
import re
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from monitor_jax import checkpoints
from monitor_jax.config import validate
from monitor_jax.errors import EXIT_USER_ERROR, CheckpointError, ConfigError
from monitor_jax.main import run
from tests.train_helpers import run_config

REPO = Path(__file__).resolve().parents[1]
DEMO = str(REPO / "configs" / "demo.py")
SMALL = ["--config.model.config.num_layers=1", "--config.model.config.embed_dim=32",
         "--config.model.config.head_dim=8", "--config.model.config.mlp_dim=32", "--config.eval.bootstrap=20",
         "--config.eval.max_rows=32", "--config.mesh.data=2", "--config.mesh.fsdp=2", "--config.mesh.tensor=2"]


def cli(capsys, command, *args, workdir=None):
    """(exit code, stdout, stderr) of one in-process CLI call on the small demo config."""
    argv = ["monitor_jax", command, f"--config={DEMO}", *SMALL, *args]
    if workdir is not None:
        argv.append(f"--config.workdir={workdir}")
    code = run(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def one_error_line(err: str) -> str:
    """The user sees exactly one `error:` line and no traceback."""
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err[-3000:]
    return errors[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run trained by the CLI: checkpoints at steps 3 and 6, each with its eval metrics."""
    work = tmp_path_factory.mktemp("run") / "demo"
    code = run(["monitor_jax", "train", f"--config={DEMO}", *SMALL, f"--config.workdir={work}",
                "--config.train.steps=6", "--config.train.batch_size=8", "--config.eval.every=3",
                "--config.train.checkpoint_every=3"])
    assert code == 0
    return work


# ------------------------------------------------------------------ user errors: one line, exit 2
@pytest.mark.parametrize("args, expected", [
    (["--config.train.stepz=3"], "error: config key train.stepz does not exist; did you mean train.steps?"),
    (["--config.data.mixing.valu=0.5"], "error: config key data.mixing.valu does not exist; did you mean "
                                        "data.mixing.value?"),
    (["--config.train.steps=abc"], "error: config key train.steps: 'abc' is not a valid int (invalid literal"),
    (["--config.data.mixing.value=1.5"], "error: data.mixing.value=1.5 is outside [0, 1]"),
    (["--config.data.mixing.value=-0.1"], "error: data.mixing.value=-0.1 is outside [0, 1]"),
    (["--config.optim.lr=nan"], "error: optim.lr=nan must be a finite number"),
    (["--config.eval.tasks[7].heldout=True"], "error: config key eval.tasks[7] does not exist (eval.tasks has 6"),
    (["--checkpont=x"], "error: Unknown command line flag 'checkpont'. Did you mean: checkpoint ?"),
])
def test_a_bad_command_line_is_one_line_naming_the_key(capsys, tmp_path, args, expected):
    code, _, err = cli(capsys, "train", *args, workdir=tmp_path / "w")
    assert code == EXIT_USER_ERROR == 2
    assert one_error_line(err).startswith(expected), err


def test_config_file_errors_name_the_file(capsys, tmp_path):
    assert run(["monitor_jax", "train", f"--config={tmp_path / 'nope.py'}"]) == 2
    assert one_error_line(capsys.readouterr().err) == f"error: --config={tmp_path / 'nope.py'}: no such file"
    broken = tmp_path / "broken.py"
    broken.write_text("from monitor_jax.config import base_config\n\ndef get_config(:\n    pass\n")
    assert run(["monitor_jax", "train", f"--config={broken}"]) == 2
    assert re.match(rf"error: config file {re.escape(str(broken))} line 3: ", one_error_line(capsys.readouterr().err))
    raising = tmp_path / "raising.py"
    raising.write_text("def get_config():\n    return {}['missing']\n")
    assert run(["monitor_jax", "train", f"--config={raising}"]) == 2
    assert one_error_line(capsys.readouterr().err) == f"error: config file {raising} line 2: KeyError: 'missing'"


def test_debug_shows_the_traceback(capsys, tmp_path):
    code, _, err = cli(capsys, "train", "--config.data.mixing.value=1.5", "--debug", workdir=tmp_path / "w")
    assert code == 2 and "Traceback" in err and "ConfigError" in err


@pytest.mark.parametrize("mixing, instruction, expected", [
    ({"kind": "linear", "start": 1.0, "end": 1.2, "steps": 10}, True, r"data.mixing.end=1.2 is outside \[0, 1\]"),
    ({"kind": "cosine", "start": -0.5, "end": 0.0, "steps": 10}, True, r"data.mixing.start=-0.5 is outside"),
    ({"kind": "staged", "boundaries": [5], "values": [0.5, 1.5]}, True, r"data.mixing.values\[1\]=1.5 is outside"),
    ({"kind": "staged", "boundaries": [5, 3], "values": [0.5, 0.5, 1.0]}, True, r"boundaries=\[5, 3\] must be "
                                                                                r"increasing"),
    ({"kind": "constant", "value": 0.5, "start": 1.0}, True, r"data.mixing.start is not a parameter of a constant"),
    ({"kind": "warp", "value": 0.5}, True, r"data.mixing.kind='warp'; choose one of"),
    ({"kind": "constant", "value": 0.75}, False, r"instruction share 1-r=0.25 at step 0 but data.instruction is "
                                                 r"empty"),
    ({"kind": "constant", "value": 0.01}, True, r"largest ratio 0.01 rounds to 0 classification rows of "
                                                r"train.batch_size=8"),
    ({"kind": "sequential", "switch_step": 4}, False, r"instruction share 1-r=1 at step 4"),
])
def test_mixing_schedules_outside_their_range_or_without_data_are_config_errors(tmp_path, mixing, instruction,
                                                                                  expected):
    c = run_config(tmp_path, "unused")
    c.data.mixing = mixing
    if not instruction:
        c.data.instruction = {}
    with pytest.raises(ConfigError, match=expected):
        validate(c, 8)


def test_a_ratio_with_no_classification_source_is_a_config_error(tmp_path):
    c = run_config(tmp_path, "unused")
    c.data.classification = []
    c.data.mixing = {"kind": "linear", "start": 0.5, "end": 0.0, "steps": 4}
    with pytest.raises(ConfigError, match=r"classification share r=0.5 at step 0 but data.classification is empty"):
        validate(c, 8)
    c.data.mixing = {"kind": "constant", "value": 0.0}
    validate(c, 8)   # instruction only: fine


# ------------------------------------------------------------------ no wrong result with exit code 0
@pytest.fixture(scope="module")
def demo_tokenizer_dir(trained):
    return trained / "tokenizer"


def _rows(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_vocabulary_smaller_than_the_tokenizer_is_an_error_before_scoring(capsys, tmp_path, demo_tokenizer_dir):
    from tests.hf_models import save_tiny

    hf = save_tiny("qwen3", tmp_path / "small_vocab", vocab_size=256)
    rows = _rows(tmp_path / "rows.jsonl", [{"text": f"how do I clean glassware {i}"} for i in range(50)])
    out = tmp_path / "scores.jsonl"
    code, stdout, err = cli(capsys, "score", "--task=chem_harm", f"--input={rows}", f"--output={out}",
                            f"--checkpoint={hf}", f"--config.model.tokenizer={demo_tokenizer_dir}",
                            workdir=tmp_path / "w")
    assert code == 2 and "scored" not in stdout
    line = one_error_line(err)
    n_tokens = len(json.loads((demo_tokenizer_dir / "tokenizer.json").read_text())["model"]["vocab"])
    assert "has a vocabulary of 256 but the tokenizer" in line and "ids 256.." in line
    assert n_tokens > 256
    assert not out.exists() and not Path(f"{out}.partial").exists()


def test_non_finite_scores_stop_the_command_naming_the_row(capsys, tmp_path, demo_tokenizer_dir):
    from safetensors.numpy import load_file, save_file

    from tests.hf_models import save_tiny

    vocab = len(json.loads((demo_tokenizer_dir / "tokenizer.json").read_text())["model"]["vocab"]) + 8
    hf = save_tiny("qwen3", tmp_path / "nan_model", vocab_size=vocab)
    tensors = load_file(hf / "model.safetensors")
    tensors["model.norm.weight"][:] = np.nan
    save_file(tensors, str(hf / "model.safetensors"), metadata={"format": "pt"})
    rows = _rows(tmp_path / "rows.jsonl", [{"id": f"r{i}", "text": f"how do I store bleach {i}"} for i in range(5)])
    out = tmp_path / "scores.jsonl"
    code, stdout, err = cli(capsys, "score", "--task=chem_harm", f"--input={rows}", f"--output={out}",
                            f"--checkpoint={hf}", f"--config.model.tokenizer={demo_tokenizer_dir}",
                            workdir=tmp_path / "w")
    assert code == 2 and "scored" not in stdout
    assert re.match(rf"error: {re.escape(str(rows))} line \d: the score is nan", one_error_line(err))
    assert not out.exists()   # only OUTPUT.partial, never a finished-looking file


def test_score_flags_truncated_rows_and_counts_them(capsys, tmp_path, trained):
    long_text = " ".join(f"word{i % 97}" for i in range(9000))
    rows = _rows(tmp_path / "rows.jsonl", [{"id": "short", "text": "how do I clean a lab bench", "label": 0},
                                           {"id": "long", "text": long_text, "label": 1},
                                           {"id": "short2", "text": "where do I buy a fume hood", "label": 0}])
    out = tmp_path / "scores.jsonl"
    code, stdout, _ = cli(capsys, "score", "--task=chem_harm", f"--input={rows}", f"--output={out}",
                          workdir=trained)
    assert code == 0
    got = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert got["short"]["truncated"] == 0 and got["short2"]["truncated"] == 0
    assert got["long"]["truncated"] > 8000          # 9000 words do not fit 128 tokens
    assert "scored 3 rows" in stdout and "1 truncated to 128 tokens" in stdout
    assert all(math.isfinite(r["score"]) for r in got.values())


def test_jsonl_nan_is_not_json(tmp_path):
    from monitor_jax.data.sources import DataError, JsonlSource

    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "a", "label": 1}\n{"text": "b", "id": NaN}\n')
    with pytest.raises(DataError, match=rf"{re.escape(str(path))} line 2: invalid JSON: NaN is not a JSON value"):
        JsonlSource(path)[1]


# ------------------------------------------------------------------ --checkpoint
def _best_step(workdir: Path, pick=max, metric: str = "eval/mean_heldout_auroc") -> int:
    """From metrics.jsonl, independently of orbax's stored metrics."""
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    scores = {r["step"]: r[metric] for r in rows if metric in r and r["step"] in (3, 6)}
    assert len(scores) == 2 and scores[3] != scores[6]
    return pick(scores, key=lambda s: scores[s])


def test_checkpoint_flag_accepts_a_run_its_folder_a_step_best_and_hf(trained, tmp_path):
    metric = "eval/mean_heldout_auroc"
    assert checkpoints.resolve("", trained).step == 6
    assert checkpoints.resolve(str(trained), "elsewhere").step == 6
    assert checkpoints.resolve(str(trained / "checkpoints"), "elsewhere").step == 6
    assert checkpoints.resolve(str(trained / "checkpoints" / "3"), "elsewhere").step == 3
    best = checkpoints.resolve(f"{trained}:best", "elsewhere", best_metric=metric)
    assert best.step == _best_step(trained, max)
    worst = checkpoints.resolve(f"{trained}:best", "elsewhere", best_metric=metric, best_mode="min")
    assert worst.step == _best_step(trained, min) != best.step
    assert checkpoints.resolve("", tmp_path / "fresh").kind == "none"
    with pytest.raises(CheckpointError, match=r"':best' needs train.best_metric"):
        checkpoints.resolve(f"{trained}:best", "elsewhere")
    with pytest.raises(CheckpointError, match=r"does not exist"):
        checkpoints.resolve(str(tmp_path / "missing"), "elsewhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"holds no checkpoint: give a run's work directory"):
        checkpoints.resolve(str(tmp_path / "empty"), "elsewhere")


def test_eval_report_names_the_checkpoint_step(capsys, trained):
    code, stdout, _ = cli(capsys, "eval", f"--checkpoint={trained}/checkpoints/3", workdir=trained)
    assert code == 0
    report = trained / "eval" / "3"
    assert json.loads((report / "report.json").read_text())["step"] == 3
    md = (report / "report.md").read_text()
    assert md.startswith("# checkpoint step 3\n") and "training step 3." in md
    assert "| truncated |" in md


def test_every_evaluation_inside_train_writes_the_report_eval_writes(trained):
    """Before: `train` evaluated but wrote only metrics.jsonl; the report needed a separate `eval`."""
    for step, title in ((0, "# before training (step 0)"), (3, "# checkpoint step 3"), (6, "# checkpoint step 6")):
        report = trained / "eval" / str(step)
        for name in ("report.json", "report.md", "roc.png", "scores.jsonl"):
            assert (report / name).stat().st_size > 0, (step, name)
        assert (report / "report.md").read_text().startswith(title + "\n")
        assert json.loads((report / "report.json").read_text())["step"] == step


def test_eval_and_score_show_progress(capsys, tmp_path, trained):
    """Before: a long evaluation ran in silence."""
    _, _, err = cli(capsys, "eval", workdir=trained)
    # 6 sets of 32 rows and control_arena's 100 calibration rows
    assert re.search(r"eval \(step 6\): +\d+%\|.*\| \d+/292 \[.*row/s\]", err), err[-2000:]
    rows = _rows(tmp_path / "rows.jsonl", [{"text": f"how do I label a flask {i}"} for i in range(5)])
    _, _, err = cli(capsys, "score", "--task=chem_harm", f"--input={rows}", f"--output={tmp_path / 's.jsonl'}",
                    workdir=trained)
    assert re.search(r"score: 100%\|.*\| 5/5 \[.*row/s\]", err), err[-2000:]


# ------------------------------------------------------------------ corrupt checkpoints
def _largest_data_file(step_dir: Path) -> Path:
    return max((p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"),
               key=lambda p: p.stat().st_size)


@pytest.mark.parametrize("damage", ["data file", "_METADATA", "_METADATA unsealed"])
def test_a_corrupt_checkpoint_is_an_error_naming_the_directory_and_file(capsys, tmp_path, trained, damage):
    work = tmp_path / "copy"
    shutil.copytree(trained, work)
    step_dir = work / "checkpoints" / "6"
    target = _largest_data_file(step_dir) if damage == "data file" else step_dir / "state" / "_METADATA"
    with open(target, "r+b") as f:
        f.truncate(target.stat().st_size // 3)
    if damage.endswith("unsealed"):
        (step_dir / checkpoints.SEAL).unlink()
    code, _, err = cli(capsys, "eval", workdir=work)
    assert code == 2
    line = one_error_line(err)
    assert f"checkpoint {step_dir} is corrupt: file {target.relative_to(step_dir)}" in line


def test_resume_skips_a_corrupt_latest_checkpoint_and_matches_the_uninterrupted_run(tmp_path, trained, caplog):
    from monitor_jax.commands.train import train

    tok = str(trained / "tokenizer")
    straight = train(run_config(tmp_path / "straight", tok, steps=6))
    first = train(run_config(tmp_path / "resumed", tok, steps=6, run_steps=4))   # checkpoints at 2 and 4
    assert first.status == "paused"
    damaged = tmp_path / "resumed" / "checkpoints" / "4"
    data_file = _largest_data_file(damaged)
    with open(data_file, "r+b") as f:
        f.truncate(100)
    with caplog.at_level(logging.WARNING, logger="monitor_jax.checkpoints"):
        second = train(run_config(tmp_path / "resumed", tok, steps=6))
    assert second.status == "finished" and second.step == 6
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert f"skipped checkpoint step 4: checkpoint {damaged} is corrupt: file " \
           f"{data_file.relative_to(damaged)} is 100 bytes" in warning and "Resuming from step 2" in warning
    quarantined = tmp_path / "resumed" / checkpoints.QUARANTINE / "4"
    assert (quarantined / data_file.relative_to(damaged)).stat().st_size == 100   # moved, not deleted
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                 jax.device_get(straight.state.params), jax.device_get(second.state.params))


def test_a_checkpoint_that_no_longer_fits_the_config_is_an_error_and_nothing_moves(tmp_path, trained):
    from monitor_jax.commands.train import train

    tok = str(trained / "tokenizer")
    train(run_config(tmp_path / "run", tok, steps=4))
    changed = run_config(tmp_path / "run", tok, steps=8)
    changed.model.config.mlp_dim = 96
    with pytest.raises(CheckpointError, match=r"checkpoint .*/checkpoints/4 could not be restored"):
        train(changed)
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["2", "4"]
    assert not (tmp_path / "run" / checkpoints.QUARANTINE).exists()
