"""One module per CLI command; each defines `run(config, flags) -> exit code` over assembled pieces.

A new command is a new module here plus its name in COMMANDS; `monitor_jax.main` only parses and dispatches.
"""
import importlib

COMMANDS = ("train", "eval", "score", "generate", "elicit", "sweep", "report", "export", "convert", "plan",
            "score_logs")
CONFIG_FREE = ("convert", "report")   # commands that run without --config


def get(name: str):
    """The command's `run` function."""
    return importlib.import_module(f"monitor_jax.commands.{name}").run
