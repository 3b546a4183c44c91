"""`export`: write `--checkpoint`'s parameters as a Hugging Face directory (weights, config, tokenizer); a LoRA
run's merged into ordinary weights, with its adapters in the PEFT layout in OUTPUT/adapter."""
from __future__ import annotations

import jax

from monitor_jax import assemble, lease
from monitor_jax.config import validate
from monitor_jax.errors import EXIT_OK, ConfigError


def run(config, flags) -> int:
    if not flags.output:
        raise ConfigError("export needs --output")
    validate(config, jax.device_count(), training=False)
    with lease.hold(flags.output, "export", "--output"):    # one writer per output directory
        rt = assemble.runtime(config, flags.checkpoint)
        written = assemble.export(rt, rt.params, flags.output)
    if jax.process_index() == 0:
        print(f"exported {rt.description} to {' and '.join(written)}")
    return EXIT_OK
