"""One CLI: parse the flags, dispatch to monitor_jax/commands/NAME.py, turn user errors into exit codes.

    python -m monitor_jax.main train  --config=configs/demo.py [--config.train.steps=100 ...]
    python -m monitor_jax.main eval   --config=configs/demo.py [--checkpoint=WORKDIR[:best] | STEP_DIR | HF_DIR]
    python -m monitor_jax.main score  --config=... --task=NAME --input=rows.jsonl --output=scores.jsonl
    python -m monitor_jax.main generate --config=... --input=prompts.jsonl --output=out.jsonl [--task=NAME]
    python -m monitor_jax.main elicit --config=... [--stage=NAME]
    python -m monitor_jax.main sweep --config=configs/paper/FILE.py [--config.KEY=VALUE ...] [--rerun_changed]
    python -m monitor_jax.main report --sweep=SWEEP_WORKDIR
    python -m monitor_jax.main export --config=... [--checkpoint=...] --output=hf_dir
    python -m monitor_jax.main convert --gguf=FILE.gguf|package:NAME --output=hf_dir
    python -m monitor_jax.main plan --config=... --topology=v5e-64 | --devices=8 --hbm_gib=80 --peak_tflops=989

Exit codes (monitor_jax.errors): 0 done; 2 a user error (config, data, task,
checkpoint), printed as one line (`--debug` or MONITOR_JAX_DEBUG=1 adds the
traceback); 75 preempted (SIGTERM or Ctrl-C: saved; run the same command to
resume); anything else is a bug, with its traceback.

Multi-host (TPU pods, GPU clusters): the same command on every host;
`jax.distributed.initialize()` is called when the environment describes a
multi-process job (TPU pod metadata, SLURM, or JAX_COORDINATOR_ADDRESS with
JAX_NUM_PROCESSES and JAX_PROCESS_ID). See launch/README.md.
"""
from __future__ import annotations

import difflib
import logging
import os
import re
import runpy
import sys
import traceback
from typing import Any

from absl import flags
from ml_collections import config_flags

from monitor_jax.commands import COMMANDS, CONFIG_FREE   # names only: a command's module is imported on dispatch
from monitor_jax.errors import EXIT_USER_ERROR, ConfigError, MonitorError

USAGE = f"usage: python -m monitor_jax.main {{{','.join(COMMANDS)}}} --config=FILE [--config.KEY=VALUE ...]"


def define_flags(flag_values: flags.FlagValues, argv: list[str]) -> Any:
    """The CLI's flags on `flag_values`; returns the config holder (`.value` after parsing `argv`)."""
    # ml_collections finds the --config.KEY overrides in `sys_argv` (default: sys.argv, not the parsed argv).
    holder = config_flags.DEFINE_config_file("config", None, "Experiment config file (get_config()).",
                                             flag_values=flag_values, sys_argv=list(argv))
    flags.DEFINE_string("checkpoint", "", "A run's work directory or checkpoints/ folder (its latest step; "
                        "DIR:best for the best by train.best_metric), a step directory, or a Hugging Face "
                        "directory; default: the run's latest checkpoint, else the base model.",
                        flag_values=flag_values)
    flags.DEFINE_string("input", "", "score, generate: JSONL rows to score or reply to.", flag_values=flag_values)
    flags.DEFINE_string("gguf", "", "convert: a GGUF file, or package:NAME (the GGUF an installed package ships).",
                        flag_values=flag_values)
    flags.DEFINE_string("output", "", "score, generate: JSONL to write; export, convert: Hugging Face directory "
                        "to write.",
                        flag_values=flag_values)
    flags.DEFINE_string("task", "", "score: the task (prompt) to score rows with; generate: render rows with "
                        "this task's prompt (and its truncation policy).", flag_values=flag_values)
    flags.DEFINE_string("stage", "", "elicit: rerun this one stage (predict, pseudo_label, train, supervised, "
                        "eval_zero_shot, eval_elicited, eval_supervised, report); default: every stage not done.",
                        flag_values=flag_values)
    flags.DEFINE_string("sweep", "", "report: a sweep's work directory.", flag_values=flag_values)
    flags.DEFINE_list("paired", [], "report: KEY:TREATMENT:BASELINE,... paired AUROC differences across a grid key "
                      "(besides the sweep's own sweep.paired).", flag_values=flag_values)
    flags.DEFINE_bool("rerun_changed", False, "sweep: delete and rerun the runs that started with other settings "
                      "than the config now gives them (default: such a run is an error).", flag_values=flag_values)
    flags.DEFINE_string("topology", "", "plan: a Cloud TPU slice (v5e-64, v5p-128, v4-32, v6e-8) compiled for "
                        "without one (needs libtpu: pip install -e '.[tpu]').", flag_values=flag_values)
    flags.DEFINE_integer("devices", 0, "plan: N accelerators (GPUs) of --hbm_gib and --peak_tflops, compiled on N "
                         "simulated CPU devices.", flag_values=flag_values)
    flags.DEFINE_enum("platform", "gpu", ["gpu", "cpu"], "plan --devices: what the devices are. gpu: compiled on "
                      "CPU devices standing in for the GPU's compiler, memory estimated by layer (docs/scaling.md); "
                      "cpu: compiled by their own compiler.", flag_values=flag_values)
    flags.DEFINE_float("hbm_gib", 0.0, "plan --devices: memory of one device in GiB.", flag_values=flag_values)
    flags.DEFINE_float("peak_tflops", 0.0, "plan --devices: dense bf16 peak of one device in TFLOP/s.",
                       flag_values=flag_values)
    flags.DEFINE_integer("search_rounds", 4, "plan: compiles of the largest batch's estimate, corrected until one fits "
                         "(0: the estimate, not compiled).", flag_values=flag_values)
    flags.DEFINE_bool("full_depth", False, "plan: compile every layer instead of extrapolating a deep model from two "
                      "smaller depths (exact; minutes a compile for an 8B model).", flag_values=flag_values)
    flags.DEFINE_float("mfu", 0.4, "plan: the model FLOPs utilisation the step time assumes.", flag_values=flag_values)
    flags.DEFINE_bool("debug", False, "Show tracebacks of user errors.", flag_values=flag_values)
    return holder



# ------------------------------------------------------------------ parsing, with errors that name the key
def _load_config_file(path: str):
    """get_config() of a config file; a missing file, a syntax error or an exception in it names the file."""
    if not os.path.isfile(path):
        raise ConfigError(f"--config={path}: no such file")
    try:
        module = runpy.run_path(path)
        if "get_config" not in module:
            raise ConfigError(f"config file {path} defines no get_config()")
        return module["get_config"]()
    except SyntaxError as e:
        raise ConfigError(f"config file {path} line {e.lineno}: {e.msg}") from None
    except MonitorError:
        raise
    except Exception as e:  # noqa: BLE001  (the user's file may raise anything; name where)
        frames = [f for f in traceback.extract_tb(e.__traceback__)
                  if os.path.abspath(f.filename) == os.path.abspath(path)]
        where = f" line {frames[-1].lineno}" if frames else ""
        raise ConfigError(f"config file {path}{where}: {type(e).__name__}: {e}") from None


def _lookup(config, key: str) -> Any:
    """The value at a `--config.KEY` path; a key that does not exist says which part is wrong and suggests one."""
    node, path = config, []
    for part in key.split("."):
        m = re.fullmatch(r"([^\[\]]+)((?:\[\d+\])*)", part)
        if not m:
            raise ConfigError(f"config key {key} is not a valid key path")
        name, indices = m.group(1), [int(i) for i in re.findall(r"\[(\d+)\]", m.group(2))]
        keys = list(node.keys()) if hasattr(node, "keys") else None
        if keys is None:
            raise ConfigError(f"config key {'.'.join(path)} is a {type(node).__name__}, it has no field {name!r}")
        if name not in keys:
            close = difflib.get_close_matches(name, keys, n=1)
            hint = f"; did you mean {'.'.join(path + close)}?" if close else f"; {'.'.join(path) or 'the config'} " \
                                                                             f"has {sorted(keys)}"
            raise ConfigError(f"config key {'.'.join(path + [name])} does not exist{hint}")
        node = node[name]
        path.append(name)
        for i in indices:
            if not isinstance(node, (list, tuple)) or i >= len(node):
                size = len(node) if isinstance(node, (list, tuple)) else "no"
                raise ConfigError(f"config key {'.'.join(path)}[{i}] does not exist ({'.'.join(path)} has {size} "
                                  f"items)")
            node = node[i]
            path[-1] += f"[{i}]"
    return node


def parse(argv: list[str], flag_values: flags.FlagValues) -> list[str]:
    """Parse the command line; every mistake is a ConfigError naming the flag or the config key."""
    config_args = [a for a in argv[1:] if re.match(r"--config(=|$)", a)]
    commands = [a for a in argv[1:] if not a.startswith("-")]
    if not config_args and set(commands) & set(CONFIG_FREE):
        try:
            return flag_values(argv)
        except flags.Error as e:
            raise ConfigError(f"{str(e).splitlines()[0]}; {USAGE}") from None
    if not config_args:
        raise ConfigError(f"--config is required (e.g. --config=configs/demo.py); {USAGE}")
    config_path = config_args[-1].split("=", 1)[1] if "=" in config_args[-1] else ""
    config = _load_config_file(config_path)
    for arg in argv[1:]:
        m = re.match(r"--(?:no)?config\.([^=]+)", arg)
        if m:
            _lookup(config, m.group(1))
    try:
        return flag_values(argv)
    except flags.IllegalFlagValueError as e:
        m = re.match(r"flag --config\.([^=]+)=(.*?): (.*)", str(e), re.S)
        if m:
            key, value, reason = m.groups()
            expected = type(_lookup(config, key)).__name__
            raise ConfigError(f"config key {key}: {value!r} is not a valid {expected} "
                              f"({reason.splitlines()[0]})") from None
        raise ConfigError(str(e).splitlines()[0]) from None
    except flags.Error as e:
        raise ConfigError(f"{str(e).splitlines()[0]}; {USAGE}") from None


# ------------------------------------------------------------------ running
def maybe_initialize_distributed() -> None:
    """Join a multi-process job when the environment describes one; a no-op on one host.

    TPU pods and Slurm are detected by jax itself. Anywhere else, set
    JAX_COORDINATOR_ADDRESS (host:port of process 0), JAX_NUM_PROCESSES and
    JAX_PROCESS_ID: jax reads only the first, so the other two are passed here.
    """
    import jax

    coordinator = os.environ.get("JAX_COORDINATOR_ADDRESS")
    multi = (coordinator or int(os.environ.get("SLURM_NTASKS", "1")) > 1
             or os.environ.get("TPU_WORKER_HOSTNAMES", "").count(",") > 0)
    if not multi:
        return
    kwargs = {}
    if coordinator and "SLURM_NTASKS" not in os.environ and "TPU_WORKER_HOSTNAMES" not in os.environ:
        missing = [k for k in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID") if k not in os.environ]
        if missing:
            raise ConfigError(f"JAX_COORDINATOR_ADDRESS={coordinator} is set but {' and '.join(missing)} "
                              f"not: set all three on every process (launch/README.md)")
        kwargs = dict(num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
                      process_id=int(os.environ["JAX_PROCESS_ID"]))
    # CPU-only multi-process runs (tests, CPU clusters) need a cross-process collectives backend.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**kwargs)


def main(argv: list[str]) -> int:
    """Parse, dispatch, and return the exit code. Flags live in a fresh FlagValues per call, so commands
    can also run in-process (tests)."""
    flag_values = flags.FlagValues()
    holder = define_flags(flag_values, argv)
    rest = parse(argv, flag_values)
    if len(rest) != 2 or rest[1] not in COMMANDS:
        raise ConfigError(f"expected one command, got {rest[1:] or 'none'}; {USAGE}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)   # orbax logs every file it renames at INFO
    maybe_initialize_distributed()
    from monitor_jax import commands

    return commands.get(rest[1])(holder.value, flag_values)


def run(argv: list[str] | None = None) -> int:
    """The CLI: `main`, with a user error printed as one line and EXIT_USER_ERROR."""
    argv = list(sys.argv if argv is None else argv)
    debug = any(a in ("--debug", "--debug=true", "--debug=True") for a in argv) or \
        os.environ.get("MONITOR_JAX_DEBUG", "") not in ("", "0")
    try:
        return main(argv)
    except MonitorError as e:
        if debug:
            traceback.print_exc()
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(run())
