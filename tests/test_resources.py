"""Unit tests (no Ray cluster, no GPU) for the device decisions of issue 13: GPUs by demand (fix 1), CUDA only for
processes Ray gave a GPU (fix 5), and the resume order of probes/fine-tunes (fix 4)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from macdiff_ray.train.resources import (GpuSupply, _monitor_autoscaling_configs, decide_use_gpu,
                                         launchable_from_node_types, trial_device)

# The shape of cluster.yaml's node types: a CPU head and a spot GPU type scaling from 0 to 4.
CLUSTER = {
    "max_workers": 4,
    "head_node_type": "ray.head.cpu",
    "available_node_types": {
        "ray.head.cpu": {"resources": {"CPU": 4, "GPU": 0}},
        "ray.worker.gpu": {"min_workers": 0, "max_workers": 4, "resources": {"CPU": 8, "GPU": 1}},
        "ray.worker.cpu": {"resources": {"CPU": 16}},  # max_workers from the top level
    },
}


def test_launchable_counts_worker_types_only():
    assert launchable_from_node_types(CLUSTER, "GPU") == 4.0
    assert launchable_from_node_types(CLUSTER, "CPU") == 8 * 4 + 16 * 4  # the head's 4 CPUs are not launchable
    assert launchable_from_node_types({"available_node_types": {}}, "GPU") == 0.0
    two = {"available_node_types": {"a": {"max_workers": 2, "resources": {"GPU": 8}},
                                    "b": {"max_workers": 0, "resources": {"GPU": 8}}}}
    assert launchable_from_node_types(two, "GPU") == 16.0


@pytest.mark.parametrize("now, launchable, needed, expect", [
    (0, 4, 1, True),    # GPU workers at zero, the autoscaler can launch them: demand decides -> GPUs
    (0, 4, 4, True),
    (0, 4, 5, False),   # more workers than the node types can ever hold
    (2, 0, 2, True),    # a fixed cluster with GPUs now
    (1, 0, 2, False),
    (0, 0, 1, False),   # a CPU-only laptop
    (0, math.inf, 8, True),
])
def test_auto_decides_by_capacity(now, launchable, needed, expect):
    supply = GpuSupply("GPU", now, launchable, "test")
    assert decide_use_gpu("auto", needed, supply) is expect
    assert decide_use_gpu("no", needed, supply) is False
    if expect:
        assert decide_use_gpu("yes", needed, supply) is True
    else:
        with pytest.raises(RuntimeError, match="use_gpu='yes'.*launchable"):
            decide_use_gpu("yes", needed, supply)


def test_decide_rejects_bad_input():
    supply = GpuSupply("GPU", 0, 0, "test")
    with pytest.raises(ValueError, match="use_gpu"):
        decide_use_gpu("maybe", 1, supply)
    with pytest.raises(ValueError, match="needed"):
        decide_use_gpu("auto", 0, supply)


def _fake_proc(tmp_path, pid: int, argv: list[str]):
    d = tmp_path / "proc" / str(pid)
    d.mkdir(parents=True)
    (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")


def test_monitor_config_found_for_this_cluster_only(tmp_path):
    cfg = tmp_path / "autoscaling.json"
    cfg.write_text(json.dumps(CLUSTER))
    monitor = "/x/site-packages/ray/autoscaler/_private/monitor.py"
    _fake_proc(tmp_path, 10, ["python", "-u", monitor, "--gcs-address=10.0.0.1:6379",
                              f"--autoscaling-config={cfg}"])
    _fake_proc(tmp_path, 11, ["python", "-u", monitor, "--gcs-address=10.0.0.1:7000",
                              "--autoscaling-config=/other.yaml"])  # another cluster on the same machine
    _fake_proc(tmp_path, 12, ["python", "train.py", "--gcs-address=10.0.0.1:6379",
                              "--autoscaling-config=/not-a-monitor.yaml"])
    found = list(_monitor_autoscaling_configs("10.0.0.1:6379", proc=tmp_path / "proc"))
    assert found == [cfg]
    assert list(_monitor_autoscaling_configs("10.0.0.9:6379", proc=tmp_path / "proc")) == []


def test_trial_device_uses_ray_gpu_ids_not_visibility(monkeypatch):
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the node has GPUs; Ray shows them to all
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [])
    assert trial_device("auto") == torch.device("cpu")  # zero-GPU trial: no CUDA even though it is visible
    with pytest.raises(RuntimeError, match="assigned no GPU"):
        trial_device("yes")
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [3])
    assert trial_device("auto") == torch.device("cuda", 0)  # Ray set CUDA_VISIBLE_DEVICES=3: it is cuda:0 here
    assert trial_device("no") == torch.device("cpu")


def _trained_state(make_opt):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    opt = make_opt(net)
    net(torch.randn(5, 4)).sum().backward()
    opt.step()
    return {"model": net.state_dict(), "optimizer": opt.state_dict()}


@pytest.mark.parametrize("make_opt", [
    lambda m: torch.optim.AdamW(m.parameters(), lr=1e-3),
    lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9),
], ids=["adamw", "sgd"])
def test_probe_resume_moves_model_before_loading_optimizer_state(make_opt):
    """The "meta" device stands in for CUDA: ``Optimizer.load_state_dict`` casts the state to the device each
    parameter has at that moment, so loading before the move would leave it on the CPU (issue 13, fix 4)."""
    from macdiff_ray.eval.probe import place_and_restore

    state = _trained_state(make_opt)
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    meta = torch.device("meta")
    optimizer, schedule = place_and_restore(net, meta, lambda m: (make_opt(m), "sched"), state)
    assert schedule == "sched"
    assert all(p.device == meta for p in net.parameters())
    params = {id(p) for p in net.parameters()}
    moments = 0
    for group in optimizer.param_groups:
        for p in group["params"]:
            assert id(p) in params  # the optimiser steps the parameters that are on the device
            for k, v in optimizer.state[p].items():
                if k != "step" and torch.is_tensor(v):  # AdamW keeps `step` on the CPU by design
                    assert v.device == meta, f"optimizer state {k!r} left on {v.device}"
                    moments += 1
    assert moments >= 4


def test_probe_fresh_start_builds_optimizer_on_device():
    from macdiff_ray.eval.probe import place_and_restore

    net = nn.Linear(4, 2)
    optimizer, _ = place_and_restore(net, torch.device("meta"),
                                     lambda m: (torch.optim.SGD(m.parameters(), lr=0.1), None), None)
    assert all(p.device.type == "meta" for g in optimizer.param_groups for p in g["params"])
