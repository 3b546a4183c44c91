"""One CLI: train, eval, score, export.

    python -m monitor_jax.main train  --config=configs/demo.py [--config.train.steps=100 ...]
    python -m monitor_jax.main eval   --config=configs/demo.py [--checkpoint=WORKDIR/checkpoints/450]
    python -m monitor_jax.main score  --config=... --task=NAME --input=rows.jsonl --output=scores.jsonl
    python -m monitor_jax.main export --config=... [--checkpoint=...] --output=hf_dir

Multi-host (TPU pods, GPU clusters): the same command on every host;
`jax.distributed.initialize()` is called when the environment describes a
multi-process job (TPU pod metadata, SLURM, or JAX_COORDINATOR_ADDRESS with
JAX_NUM_PROCESSES and JAX_PROCESS_ID). See launch/README.md.
"""
from __future__ import annotations

import logging
import os
import sys

from absl import app, flags
from ml_collections import config_flags

COMMANDS = ("train", "eval", "score", "export")
_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (get_config()).")
flags.DEFINE_string("checkpoint", "", "An orbax step directory (WORKDIR/checkpoints/STEP) or a Hugging Face "
                    "checkpoint directory; default: the run's latest checkpoint, else the base model.")
flags.DEFINE_string("input", "", "score: JSONL rows to score.")
flags.DEFINE_string("output", "", "score: JSONL to write; export: Hugging Face directory to write.")
flags.DEFINE_string("task", "", "score: the task (prompt) to score rows with.")
FLAGS = flags.FLAGS


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
            raise app.UsageError(f"JAX_COORDINATOR_ADDRESS={coordinator} is set but {' and '.join(missing)} "
                                 f"not: set all three on every process (launch/README.md)")
        kwargs = dict(num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
                      process_id=int(os.environ["JAX_PROCESS_ID"]))
    # CPU-only multi-process runs (tests, CPU clusters) need a cross-process collectives backend.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**kwargs)


def main(argv):
    if len(argv) < 2 or argv[1] not in COMMANDS:
        raise app.UsageError(f"usage: python -m monitor_jax.main {{{','.join(COMMANDS)}}} --config=FILE ...")
    if _CONFIG.value is None:
        raise app.UsageError("--config is required (e.g. --config=configs/demo.py)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)   # orbax logs every file it renames at INFO
    maybe_initialize_distributed()
    from monitor_jax import commands

    getattr(commands, argv[1])(_CONFIG.value, FLAGS)


def run():
    app.run(main)


if __name__ == "__main__":
    sys.exit(run())
