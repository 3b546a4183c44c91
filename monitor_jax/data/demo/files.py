"""The demo suite written out as files, in the layout a config's `data_root` reads (`research.data_file`)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from monitor_jax.data import research
from monitor_jax.data.demo.domains import DOMAINS, demo_rows
from monitor_jax.data.demo.grammar import SPLITS
from monitor_jax.data.demo.instruction import instruction_rows


def write_demo_jsonl(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Write `out_dir/<domain>/{train,test}.jsonl` for every domain and `instruct` (the layout a config's
    `data_root` reads, `research.data_file`); return `out_dir`."""
    out = Path(out_dir)
    for name in (*DOMAINS, research.INSTRUCTION):
        (out / name).mkdir(parents=True, exist_ok=True)
        for split in SPLITS:
            rows = instruction_rows(split, seed) if name == research.INSTRUCTION else demo_rows(name, split, seed)
            with open(research.data_file(str(out), name, split), "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)
    return out
