"""Measuring the training step: a same-run matmul yardstick, FLOPs per sample, peak memory, attention kernels.

Used by ``benchmarks/model_step.py`` and ``benchmarks/gpu.py``; needs torch only (no Ray). Every figure is
measured in the calling process, on its device, at the time of the call: a fraction of "the matmul rate" always
means a matmul measured in the same run, never a datasheet figure.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Callable, Optional

import torch

__all__ = ["sync", "matmul_flops", "count_flops", "peak_memory_bytes", "reset_peak_memory", "rss_bytes",
           "sdpa_backend", "SDPA_CHOICES"]

SDPA_CHOICES = ("auto", "flash", "efficient", "cudnn", "math")


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_flops(device: torch.device, dtype: torch.dtype, n: int = 2048, reps: int = 10) -> float:
    """Measured FLOP/s of an ``n x n @ n x n`` matmul (2 n^3 FLOPs), best of ``reps`` after two warm-ups."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(device)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn`` counted by ``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions
    and attention, forward and backward; elementwise ops are not counted).

    The call runs with the math attention kernel: FlopCounterMode has no formula for the CPU's fused attention
    (``_scaled_dot_product_flash_attention_for_cpu``) and counts it as 0, which left attention out of every CPU
    count before 2026-12-02 (the ``paper`` step: 21.17 GFLOP per sample counted so, 29.94 with attention). The
    math kernel does the same multiply-adds, so the count holds for the fused kernels too."""
    from torch.utils.flop_counter import FlopCounterMode

    with sdpa_backend("math"), FlopCounterMode(display=False) as fc:
        fn()
    return int(fc.get_total_flops())


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device: torch.device) -> Optional[int]:
    """Peak tensor memory since the last :func:`reset_peak_memory` on CUDA (``max_memory_allocated``); on the CPU
    the process's peak resident set (``VmHWM``, since the process started: it cannot be reset); None if unknown."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return _status_kib("VmHWM")


def rss_bytes(pid: int | str = "self") -> Optional[int]:
    """Current resident set of a process (``VmRSS`` of /proc/PID/status), None where /proc has no such entry."""
    return _status_kib("VmRSS", pid)


def _status_kib(key: str, pid: int | str = "self") -> Optional[int]:
    try:
        with open(os.path.join("/proc", str(pid), "status")) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def sdpa_backend(name: str):
    """A context that restricts ``F.scaled_dot_product_attention`` to one kernel family: ``flash``,
    ``efficient`` (memory-efficient), ``cudnn``, ``math``; ``auto`` leaves torch's own choice. A kernel that cannot
    run the call (e.g. flash on a CPU without support, or fp32 on CUDA flash) then raises instead of falling back,
    so a figure labelled ``flash`` was measured with flash."""
    if name not in SDPA_CHOICES:
        raise ValueError(f"sdpa backend: {name!r} is not one of {list(SDPA_CHOICES)}")
    if name == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
               "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}[name]
    return sdpa_kernel([backend])


def write_figures(out, result: dict) -> None:
    """A benchmark's figures as indented JSON at ``out`` (a local path; its folder is created), and say where."""
    import json
    from pathlib import Path

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"figures -> {out}")
