"""The launchers of launch/ (Slurm, GKE, TPU VMs), installed as the package data of `monitor_jax.launch`.

setup.py maps this folder into the package, so a plain `pip install git+URL` ships the same files as a checkout,
and the sweep writes its Slurm script and Kubernetes Job from these templates (monitor_jax/studies/sweep.py):
one source for every launcher.
"""
from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent


def path(relative: str) -> Path:
    """A launcher file by its path under launch/, e.g. path("slurm/train.sbatch")."""
    p = HERE / relative
    if not p.is_file():
        raise FileNotFoundError(f"{p}: this install of monitor_jax does not ship {relative} (setup.py package_data)")
    return p
