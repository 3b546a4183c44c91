"""Installable surface: the public imports work and never pull in torch."""
import subprocess
import sys


def test_import_does_not_import_torch():
    code = ("import sys, monitor_jax, monitor_jax.model, monitor_jax.parallel, monitor_jax.model.tokenizer\n"
            "from monitor_jax.model import load_hf, save_hf\n"
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))")
    subprocess.run([sys.executable, "-c", code], check=True)
