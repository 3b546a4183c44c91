"""`export`: write `--checkpoint`'s parameters as a Hugging Face directory (weights, config, tokenizer)."""
from __future__ import annotations

import jax
from flax import nnx

from monitor_jax import assemble
from monitor_jax.config import validate
from monitor_jax.errors import EXIT_OK, ConfigError
from monitor_jax.model import save_hf


def run(config, flags) -> int:
    if not flags.output:
        raise ConfigError("export needs --output")
    validate(config, jax.device_count(), training=False)
    rt = assemble.runtime(config, flags.checkpoint)
    path = save_hf(nnx.merge(rt.graphdef, rt.params), flags.output, tokenizer=rt.tokenizer_dir)
    if jax.process_index() == 0:
        print(f"exported {rt.description} to {path}")
    return EXIT_OK
