"""GPU decisions by demand: does this cluster have, or can its autoscaler launch, the GPUs a part of a run needs?

On an autoscaling cluster whose GPU workers scale from zero, ``ray.cluster_resources()`` shows no GPU until
something asks for one (RAY-NOTES "Autoscaling is driven by demand"). Deciding from the current node list would
train a ``--use-gpu auto`` run on the head's CPUs and refuse ``--use-gpu yes``. So the supply counted here is the
larger of:

- ``now``: the resource in ``ray.cluster_resources()``;
- ``launchable``: what the autoscaler's node types can add, ``sum(max_workers x resources[key])`` over the worker
  types. Read from (1) the cluster config that an autoscaler reports to the GCS (autoscaler v2, KubeRay:
  ``ray._private.state.state.get_max_resources_from_cluster_config()``, the call Ray Train V2 itself uses before
  placing workers), else (2) the autoscaling config file that the head's monitor process was started with
  (``--autoscaling-config=...``: ``~/ray_bootstrap_config.yaml`` after ``ray up``; the v1 autoscaler reports no
  cluster config to the GCS). A job driver runs on the head, where that process is.

:func:`decide_use_gpu` is the pure rule (unit-tested with fake supplies); :func:`gpu_supply` reads a live cluster.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

__all__ = ["GpuSupply", "decide_use_gpu", "launchable_from_node_types", "gpu_supply", "trial_device",
           "LAUNCHER_RESOURCE"]

# The custom resource of the cluster's head (cluster.yaml: CPU 0, GPU 0, trial_launcher N). A sweep trial that only
# launches a TorchTrainer (or a fine-tuning run) asks for 1 of it and no CPU, so it and its Train controller run on
# the on-demand head, which takes no training work. Where no node offers it (a local Ray), such a trial takes
# 0.01 CPU instead (macdiff_ray.tune.sweep.launcher_resources).
LAUNCHER_RESOURCE = "trial_launcher"


@dataclass(frozen=True)
class GpuSupply:
    """GPUs (or another resource ``key``) a cluster has ``now`` and can add by autoscaling (``launchable``)."""

    key: str
    now: float
    launchable: float
    source: str  # where ``launchable`` came from

    @property
    def capacity(self) -> float:
        return max(self.now, self.launchable)

    def describe(self) -> str:
        return (f"{self.now:g} {self.key} now, up to {self.launchable:g} launchable by the autoscaler "
                f"({self.source})")


def decide_use_gpu(use_gpu: str, needed: float, supply: GpuSupply, *, what: str = "the run") -> bool:
    """The ``--use-gpu`` rule: ``no`` -> False; ``auto`` -> True iff the cluster has or can have ``needed`` GPUs;
    ``yes`` -> True, or RuntimeError naming the supply when it cannot."""
    if use_gpu not in ("auto", "yes", "no"):
        raise ValueError(f"use_gpu: expected 'auto', 'yes' or 'no', got {use_gpu!r}")
    if needed <= 0:
        raise ValueError(f"needed: expected > 0 {supply.key}, got {needed!r}")
    if use_gpu == "no":
        return False
    enough = supply.capacity >= needed
    if use_gpu == "yes" and not enough:
        raise RuntimeError(f"use_gpu='yes': {what} needs {needed:g} {supply.key} but the cluster has "
                           f"{supply.describe()}")
    return enough


def launchable_from_node_types(config: Mapping[str, Any], key: str = "GPU") -> float:
    """``sum(max_workers x resources[key])`` over the worker node types of an autoscaler config dict (the
    ``available_node_types`` of a cluster YAML). A type without ``max_workers`` takes the top-level one, as the
    autoscaler does; the head type (``head_node_type``, or a ``max_workers: 0`` type) adds nothing."""
    types = config.get("available_node_types") or {}
    head = config.get("head_node_type")
    default_max = config.get("max_workers", 0)
    total = 0.0
    for name, spec in types.items():
        if name == head:
            continue
        per_node = float((spec.get("resources") or {}).get(key, 0) or 0)
        count = spec.get("max_workers", default_max)
        if per_node > 0 and count:
            total += per_node * float(count)
    return total


def _monitor_autoscaling_configs(gcs_address: str, proc: Path = Path("/proc")) -> Iterable[Path]:
    """``--autoscaling-config`` paths of this machine's Ray monitor processes that serve ``gcs_address``."""
    for cmdline in proc.glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        argv = [a.decode(errors="replace") for a in args if a]
        if not any(a.endswith("autoscaler/_private/monitor.py") for a in argv):
            continue
        opts = dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)
        if opts.get("gcs-address") == gcs_address and opts.get("autoscaling-config"):
            yield Path(os.path.expanduser(opts["autoscaling-config"]))


def _load_config_file(path: Path) -> Optional[dict]:
    try:
        text = path.read_text()
    except OSError:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        import yaml

        data = yaml.safe_load(text)
        return data if isinstance(data, dict) else None


def gpu_supply(key: str = "GPU") -> GpuSupply:
    """The live cluster's supply of ``key`` (Ray must be initialised; see the module docstring)."""
    import ray

    now = float(ray.cluster_resources().get(key, 0.0))
    try:
        from ray._private.state import state

        reported = state.get_max_resources_from_cluster_config()
    except Exception:  # noqa: BLE001 - a private API: any failure means "not reported", never a crash
        reported = None
    if reported:
        value = float(reported.get(key, 0) or 0)
        return GpuSupply(key, now, math.inf if value >= 2 ** 62 else value, "cluster config in the GCS")
    gcs = ray.get_runtime_context().gcs_address
    for path in _monitor_autoscaling_configs(gcs):
        config = _load_config_file(path)
        if config is not None:
            return GpuSupply(key, now, launchable_from_node_types(config, key), f"autoscaling config {path}")
    return GpuSupply(key, now, 0.0, "no autoscaler config found: not an autoscaling cluster")


def trial_device(use_gpu: str, where: str = ""):
    """The torch device of a Tune trial or actor process: CUDA only when Ray assigned this process a GPU.

    Ray 2.60 no longer hides the machine's GPUs from a process that reserved none (RAY-NOTES "CUDA visibility"),
    so ``torch.cuda.is_available()`` alone would put a zero-GPU trial on a GPU another trial owns. With a GPU
    assigned, Ray sets ``CUDA_VISIBLE_DEVICES`` to it, so it is ``cuda:0`` here.
    """
    import ray
    import torch

    assigned = bool(ray.get_gpu_ids()) if ray.is_initialized() else False
    use_cuda = assigned and use_gpu != "no" and torch.cuda.is_available()
    if use_gpu == "yes" and not use_cuda:
        raise RuntimeError(f"{where}use_gpu 'yes' but Ray assigned no GPU to this process "
                           f"(ray.get_gpu_ids() = {ray.get_gpu_ids() if ray.is_initialized() else []}); "
                           "set tune.resources.gpu > 0")
    return torch.device("cuda", 0) if use_cuda else torch.device("cpu")
