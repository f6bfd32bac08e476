"""Generation workers: the frozen model of a checkpoint as Ray actors (or in this process), and the round-robin
chunk runner the drivers use.

Both tasks cut their work into chunks, each with its own seed (``common.chunk_seed(seed, task, chunk)``), and send
them round-robin to ``workers`` :class:`GenerativeWorker` Ray actors (fractional CPUs, a GPU share where the
cluster has GPUs: the pattern of ``augment.pool``); ``workers=0`` runs in this process. Results do not depend on
the number of workers.
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch

from macdiff_ray.generate.common import CLIP_X0
from macdiff_ray.generate.inpainting import reconstruct_batch
from macdiff_ray.generate.sampling import sample_batch

__all__ = ["GenerativeWorker", "make_workers", "run_chunks", "kill_workers"]


class GenerativeWorker:
    """Holds the frozen MacDiff of a :func:`macdiff_ray.augment.pool.model_bundle`; a Ray actor or in-process.

    Random draws use generators seeded per chunk, so a chunk gives the same result whichever worker of the same
    device type runs it (CPU and GPU random streams differ).
    """

    def __init__(self, bundle: Mapping[str, Any], num_threads: int = 1):
        from macdiff_ray.augment.pool import load_frozen_model

        self.model, self.schedule, self.device = load_frozen_model(bundle, num_threads)

    def _gen(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self.device.type).manual_seed(int(seed))

    def sample(self, n: int, seed: int, steps: int, eta: float, clip_x0: Optional[float] = CLIP_X0) -> np.ndarray:
        """(n, T0, V, C) float32 normalised samples (:func:`sample_batch`)."""
        out = sample_batch(self.model, self.schedule, n, seed, steps=steps, eta=eta, device=self.device,
                           clip_x0=clip_x0)
        return out.float().cpu().numpy()  # (n, T, V, C)

    def reconstruct(self, x: np.ndarray, known: np.ndarray, seed: int, condition: str, steps: int, resample: int,
                    eta: float, clip_x0: Optional[float] = CLIP_X0, recon_guidance: float = 0.0,
                    init: str = "noise", init_strength: float = 1.0) -> np.ndarray:
        """x (n, T0, V, C) float32 normalised, known (n, T0, V, C) bool -> (n, T0, V, C) float32."""
        xt = torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(self.device)  # (n, T, V, C)
        kt = torch.from_numpy(np.ascontiguousarray(known, bool)).to(self.device)  # (n, T, V, C)
        out = reconstruct_batch(self.model, self.schedule, xt, kt, condition=condition, steps=steps,
                                resample=resample, eta=eta, generator=self._gen(seed),
                                clip_x0=clip_x0, recon_guidance=recon_guidance, init=init,
                                init_strength=init_strength)  # (n, T, V, C)
        return out.float().cpu().numpy()

    def info(self) -> dict:
        return {"pid": os.getpid(), "device": str(self.device), "threads": torch.get_num_threads()}


def make_workers(bundle: Mapping[str, Any], workers: int, cpu_per_worker: float) -> list:
    """``workers`` Ray actor handles (needs a running Ray), or ``[GenerativeWorker]`` in-process for 0."""
    if workers == 0:
        return [GenerativeWorker(bundle, num_threads=max(1, torch.get_num_threads()))]
    import ray

    from macdiff_ray.augment.pool import auto_gpu_per_actor

    if not ray.is_initialized():
        raise RuntimeError("workers >= 1 needs a running Ray (macdiff_ray.train.runtime.init_ray())")
    gpu = auto_gpu_per_actor()
    threads = max(1, int(math.floor(cpu_per_worker)))
    ref = ray.put(dict(bundle))
    cls = ray.remote(GenerativeWorker)
    return [cls.options(num_cpus=cpu_per_worker, num_gpus=gpu).remote(ref, threads) for _ in range(workers)]


def run_chunks(handles: Sequence[Any], method: str, calls: Sequence[tuple], desc: str = "") -> list:
    """Call ``method(*args)`` for each ``args`` of ``calls``, round-robin over ``handles`` (Ray actors or
    in-process workers); results in call order. A progress bar over the chunks (``desc``) on the console."""
    from tqdm.auto import tqdm

    if not handles:
        raise ValueError("run_chunks: no workers")
    bar = tqdm(total=len(calls), desc=desc or method, unit="chunk", leave=False, dynamic_ncols=True)
    try:
        if isinstance(handles[0], GenerativeWorker):
            out = []
            for args in calls:
                out.append(getattr(handles[0], method)(*args))
                bar.update(1)
            return out
        import ray

        refs = [getattr(handles[i % len(handles)], method).remote(*args) for i, args in enumerate(calls)]
        pending = list(refs)
        while pending:  # results stay in call order (ray.get(refs) below); the bar follows completions
            done, pending = ray.wait(pending, num_returns=1)
            bar.update(len(done))
        return ray.get(refs)
    finally:
        bar.close()


def kill_workers(handles: Sequence[Any]) -> None:
    if handles and not isinstance(handles[0], GenerativeWorker):
        import ray

        for h in handles:
            ray.kill(h)

