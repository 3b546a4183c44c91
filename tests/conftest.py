"""CPU with 8 simulated devices, offline, float32 matmuls at full precision."""
import os

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


def pytest_configure(config):
    assert jax.device_count() == 8, f"tests expect 8 simulated CPU devices, got {jax.devices()}"


@pytest.fixture(scope="session")
def hf_dir(tmp_path_factory):
    """family -> directory of a tiny random-init checkpoint written by transformers."""
    from tests.hf_models import FAMILIES, save_tiny

    root = tmp_path_factory.mktemp("hf")
    return {family: save_tiny(family, root / family) for family in FAMILIES}
