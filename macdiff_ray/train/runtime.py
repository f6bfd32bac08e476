"""Connecting to Ray: a local Ray sized to the machine, or an existing cluster.

- ``RAY_ADDRESS`` set (also the case for a driver started by ``ray job submit``): join that cluster with
  ``ray.init(address="auto")``, which reads ``RAY_ADDRESS`` and raises ConnectionError if nothing is there. The
  cluster must import ``macdiff_ray``: install it there (``pip install -e .``) or submit with ``--working-dir .``.
- Otherwise: start a fresh local Ray (``address="local"``, so a stray ``ray start`` cluster is not joined by
  accident), with this repository on the workers' PYTHONPATH (RAY-NOTES hang 3: workers import functions by module).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

# Ray Train V2's controller polls its workers every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (2.0 s by default), and a
# worker's ``ray.train.report`` waits in a one-slot queue until that poll takes the previous report. An epoch that
# is shorter than the interval (a cached linear probe's epoch takes milliseconds) therefore costs the interval:
# 15 probe epochs took 30 s of waiting. The controller reads the variable in its own process, so it travels in the
# job's runtime_env. A value the user exported wins.
TRAIN_POLL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
TRAIN_POLL_S = "0.2"


# Ray Train V2 (2.60) gives every run a PlacementGroupCleaner actor, which polls the state API and removes the run's
# placement group should the controller die without doing so. Stopping it at the end of the run waits for its
# polling thread, about 12 s on this machine whatever the run did (a one-report fit: 27-28 s with it, 12-16 s
# without, dashboard or not). On a local Ray that this driver started the cluster ends with the driver, so the
# cleaner protects nothing there: init_ray's local branch sets this variable to "0" and trainer_class() leaves the
# cleaner out. On a cluster joined through RAY_ADDRESS (ray job submit) the variable is unset and Ray's default
# stays. A value the user exported wins.
PG_CLEANER_ENV = "MACDIFF_TRAIN_PG_CLEANER"


def worker_env(routed: dict[str, str]) -> dict[str, str]:
    """The env_vars every Ray worker of this driver gets: the console routing flag, the Train poll interval and,
    where set, the placement-group cleaner switch (trial processes build Train runs too)."""
    extra = {PG_CLEANER_ENV: os.environ[PG_CLEANER_ENV]} if PG_CLEANER_ENV in os.environ else {}
    return {TRAIN_POLL_ENV: os.environ.get(TRAIN_POLL_ENV, TRAIN_POLL_S), **extra, **routed}


def trainer_class():
    """``TorchTrainer``, or, where ``MACDIFF_TRAIN_PG_CLEANER`` is "0", a subclass without Ray Train's
    placement-group cleaner (see PG_CLEANER_ENV above)."""
    from ray.train.torch import TorchTrainer

    return TorchTrainer if os.environ.get(PG_CLEANER_ENV, "1") != "0" else _local_trainer_class()


@functools.cache
def _local_trainer_class():
    from ray.train.torch import TorchTrainer
    from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

    class LocalTorchTrainer(TorchTrainer):
        """TorchTrainer for a local Ray that ends with its driver: no placement-group cleaner actor."""

        def _create_default_callbacks(self):
            return [c for c in super()._create_default_callbacks() if not isinstance(c, PlacementGroupCleanerCallback)]

    return LocalTorchTrainer


def init_ray(quiet: bool = False) -> str:
    """Initialise Ray unless already initialised. Returns "existing", "cluster" or "local"."""
    import ray

    from macdiff_ray import console

    if ray.is_initialized():
        console.attach()
        return "existing"
    # A command that routed its console (macdiff_ray.console.setup) needs the workers' output: the driver sorts
    # it into the console (the project's lines and bars) and the run's log file (Ray's internals).
    to_driver = True if console.is_configured() else not quiet
    # Workers draw progress bars only for a driver that sorts their output (console.ROUTED_ENV); env_vars merge
    # per key with a submitted job's runtime_env.
    routed = {console.ROUTED_ENV: "1"} if console.is_configured() else {}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address="auto", log_to_driver=to_driver, runtime_env={"env_vars": worker_env(routed)})
        console.attach()
        return "cluster"
    pythonpath = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    os.environ.setdefault(PG_CLEANER_ENV, "0")  # a local Ray ends with this driver (see PG_CLEANER_ENV)
    ray.init(
        address="local",
        runtime_env={"env_vars": {"PYTHONPATH": pythonpath, **worker_env(routed)}},
        log_to_driver=to_driver,
    )
    console.attach()
    return "local"


def resolve_use_gpu(use_gpu: str, num_workers: int) -> bool:
    """``auto``: GPUs if the cluster has, or its autoscaler can launch, one per worker (demand, not the current
    node list, decides: :mod:`macdiff_ray.train.resources`). ``yes`` without that supply is an error."""
    from macdiff_ray.train.resources import decide_use_gpu, gpu_supply

    if use_gpu == "no":
        return False
    return decide_use_gpu(use_gpu, float(num_workers), gpu_supply("GPU"), what=f"{num_workers} Train worker(s)")


def ingest_config():
    """Ray Train's ``DataConfig`` with the driver's Ray Data execution options passed explicitly.

    Train's default (``DataConfig.default_ingest_options``, Ray 2.60) copies ``ExecutionOptions.exclude_resources``
    into new options, and that setter raises a ``RayDeprecationWarning`` on every run ("use label_selector").
    These options carry the same resource limits, order and progress settings without the deprecated field.
    """
    from ray.data import DataContext, ExecutionOptions
    from ray.train import DataConfig

    current = DataContext.get_current().execution_options
    return DataConfig(execution_options=ExecutionOptions(
        resource_limits=current.resource_limits,
        preserve_order=current.preserve_order,
        verbose_progress=current.verbose_progress,
        label_selector=current.label_selector,
    ))
