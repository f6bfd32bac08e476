"""Connecting to Ray: a local Ray sized to the machine, or an existing cluster.

- ``RAY_ADDRESS`` set (also the case for a driver started by ``ray job submit``): join that cluster with
  ``ray.init(address="auto")``, which reads ``RAY_ADDRESS`` and raises ConnectionError if nothing is there. The
  cluster must import ``macdiff_ray``: install it there (``pip install -e .``) or submit with ``--working-dir .``.
- Otherwise: start a fresh local Ray (``address="local"``, so a stray ``ray start`` cluster is not joined by
  accident), with this repository on the workers' PYTHONPATH (RAY-NOTES hang 3: workers import functions by module).
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def init_ray(quiet: bool = False) -> str:
    """Initialise Ray unless already initialised. Returns "existing", "cluster" or "local"."""
    import ray

    if ray.is_initialized():
        return "existing"
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address="auto", log_to_driver=not quiet)
        return "cluster"
    pythonpath = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    ray.init(
        address="local",
        runtime_env={"env_vars": {"PYTHONPATH": pythonpath}},
        log_to_driver=not quiet,
    )
    return "local"


def resolve_use_gpu(use_gpu: str, num_workers: int) -> bool:
    """``auto``: GPUs if the cluster has at least one per worker. ``yes`` without enough GPUs is an error."""
    import ray

    gpus = float(ray.cluster_resources().get("GPU", 0.0))
    if use_gpu == "no":
        return False
    if use_gpu == "yes":
        if gpus < num_workers:
            raise RuntimeError(
                f"use_gpu='yes' with num_workers={num_workers} but the Ray cluster has {gpus:g} GPU(s)"
            )
        return True
    return gpus >= num_workers
