"""Framework-free epoch functions: :func:`train_epoch` and :func:`validate`.

They take a model, an optimiser and any iterable of batch dicts (Ray Data ``iter_torch`` output, or plain
tensors in a benchmark), so the same code runs under Ray Train, in a plain PyTorch loop, or under Tune.

A batch dict has ``x`` / ``x_view`` float32 ``(B, M, T, V, C)`` and ``person_valid`` bool ``(B, M)``
(docs/ARCHITECTURE.md "Batches from Ray Data").
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any, Callable, Iterable, Mapping, Optional

import torch
from torch import nn

from macdiff_ray.train.optim import WarmupCosine


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN/Inf: the run stops instead of training on garbage."""


class DiffusionLoss(nn.Module):
    """``forward(x_clean, x_view) -> dict(loss, mse, uniformity)`` around ``MacDiff.forward_loss``.

    DDP only synchronises gradients for computations that go through the wrapped module's ``forward``; MacDiff's
    loss lives in ``forward_loss``, so this thin module makes it the forward. ``net`` is the MacDiff model (what
    checkpoints store); the schedule is plain float64 buffers (not parameters), moved with :meth:`to_device`.
    """

    def __init__(self, net: nn.Module, schedule: Any):
        super().__init__()
        self.net = net
        self.schedule = schedule

    def to_device(self, device: torch.device) -> "DiffusionLoss":
        self.schedule = self.schedule.to(device)
        return self

    def forward(self, x_clean: torch.Tensor, x_view: torch.Tensor) -> dict:
        # x_clean, x_view: (N, T, V, C)
        return self.net.forward_loss(x_clean, x_view, self.schedule)


def select_persons(batch: Mapping[str, torch.Tensor], persons: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, M, T, V, C) batch -> (N, T, V, C) clean target and encoder view.

    ``first``: actor 1 only (N = B; the released code). ``all``: every valid person (N = number of valid persons).
    """
    x, x_view = batch["x"], batch["x_view"]  # (B, M, T, V, C) each
    if x.ndim == 4:  # already one person per row: (B, T, V, C)
        return x, x_view
    if persons == "first":
        return x[:, 0], x_view[:, 0]  # (B, T, V, C)
    valid = batch["person_valid"].bool()  # (B, M)
    return x[valid], x_view[valid]  # (N, T, V, C)


def autocast(device: torch.device, amp_dtype: Optional[torch.dtype]):
    """Autocast for the forward pass: CUDA with bf16/fp16, CPU with bf16 (AVX512-BF16 / AMX kernels); ``None``
    runs in float32. CPU float16 autocast is refused (no fast CPU kernels; it would only lose precision)."""
    if amp_dtype is None:
        return contextlib.nullcontext()
    if device.type == "cpu" and amp_dtype != torch.bfloat16:
        raise ValueError(f"autocast on the CPU supports bfloat16 only, got {amp_dtype}")
    if device.type not in ("cuda", "cpu"):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


def _all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum across DDP ranks (identity without a process group)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)  # (K,)
    dist.all_reduce(t)
    return t.tolist()


def _grad_norm(params: list[torch.Tensor], grad_clip: Optional[float]) -> torch.Tensor:
    """Global gradient norm as a device tensor (no host sync); clips in place when ``grad_clip`` is set."""
    if grad_clip is not None:
        return torch.nn.utils.clip_grad_norm_(params, grad_clip)
    get_total_norm = getattr(torch.nn.utils, "get_total_norm", None)
    if get_total_norm is None:  # torch < 2.6: max_norm=inf computes the norm and leaves the gradients unchanged
        return torch.nn.utils.clip_grad_norm_(params, float("inf"))
    return get_total_norm([p.grad for p in params if p.grad is not None])  # ()


# Columns of the per-step record kept on the device between reads (train_epoch's log window).
_RECORD = ("loss", "mse", "uniformity", "grad_norm")


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[Mapping[str, torch.Tensor]],
    *,
    lr_schedule: WarmupCosine,
    start_step: int,
    max_steps: int,
    epoch: int,
    device: torch.device,
    persons: str = "first",
    amp_dtype: Optional[torch.dtype] = None,
    scaler: Optional[torch.amp.GradScaler] = None,
    grad_clip: Optional[float] = None,
    log_every: int = 10,
    on_log: Optional[Callable[[int, float, float], None]] = None,
) -> dict:
    """One epoch of at most ``max_steps`` optimiser steps. ``model(x_clean, x_view)`` returns the loss dict.

    Sync-free accounting: each step writes its loss, mse, uniformity and gradient norm into a small buffer on the
    device (no ``.item()``, no ``float(...)``: on a GPU each of those waits for the step to finish). The buffer is
    read once every ``log_every`` steps and at the end of the epoch: one device-to-host copy of a (k, 4) tensor.
    Every read checks every step of its window, so a NaN/Inf loss still raises :class:`NonFiniteLossError` naming
    the first bad step; the parameters may by then have taken up to ``log_every - 1`` more (garbage) steps, but the
    error leaves the epoch before any checkpoint is written. The epoch sums are taken on the host, in float64, from
    the same per-step float32 values in step order, so the means equal a per-step ``.item()`` accounting's exactly.

    ``on_log(steps, loss, samples_per_s)``, if given, is called at each read with the number of steps in the
    window, their mean loss on this rank and the running throughput (a progress bar).

    Returns global means over ranks and steps: ``loss, mse, uniformity, grad_norm``; ``lr`` (last step), ``steps``,
    ``samples`` (sequences, all ranks), ``epoch_time_s``, ``samples_per_s`` (all ranks), ``step`` (global step
    after the epoch), ``host_reads`` (device-to-host reads of the record on this rank).
    """
    if isinstance(log_every, bool) or not isinstance(log_every, int) or log_every < 1:
        raise ValueError(f"train_epoch: log_every must be a positive integer, got {log_every!r}")
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    step = start_step
    sums = dict.fromkeys(_RECORD, 0.0)
    samples, steps, reads, lr = 0, 0, 0, lr_schedule.lr(step)
    record = torch.zeros(log_every, len(_RECORD), dtype=torch.float32, device=device)  # (k, 4) this window
    window = 0  # steps written into `record` since the last read

    def read() -> None:
        nonlocal window, reads
        rows = record[:window].cpu().tolist()  # the one host sync of the window
        reads += 1
        first = step - window  # global step of rows[0]
        for i, row in enumerate(rows):
            if not math.isfinite(row[0]):
                raise NonFiniteLossError(
                    f"non-finite training loss {row[0]} at epoch {epoch + 1}, global step {first + i} "
                    f"(lr {lr_schedule.lr(first + i):.3g}); stopping. Lower the lr, enable grad_clip, or check the "
                    "data normalisation."
                )
            for key, v in zip(_RECORD, row):
                sums[key] += v
        if on_log is not None:
            on_log(window, sum(r[0] for r in rows) / window, samples / max(time.perf_counter() - t0, 1e-9))
        window = 0

    t0 = time.perf_counter()
    for batch in batches:
        if steps >= max_steps:
            break
        x_clean, x_view = select_persons(batch, persons)
        x_clean = x_clean.to(device, non_blocking=True)  # (N, T, V, C)
        x_view = x_view.to(device, non_blocking=True)  # (N, T, V, C)
        lr = lr_schedule.apply(optimizer, step)
        with autocast(device, amp_dtype):
            out = model(x_clean, x_view)
        loss = out["loss"].float()  # ()
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        grad_norm = _grad_norm(params, grad_clip)  # ()
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        record[window] = torch.stack(
            [loss.detach(), out["mse"].detach().float(), out["uniformity"].detach().float(), grad_norm.float()]
        )  # (4,)
        window += 1
        samples += int(x_clean.shape[0])
        steps += 1
        step += 1
        if window == log_every:
            read()
    if window:
        read()
    elapsed = time.perf_counter() - t0
    reduced = _all_reduce_sum(
        [sums["loss"], sums["mse"], sums["uniformity"], sums["grad_norm"], float(samples), float(steps), 1.0],
        device,
    )
    loss_s, mse_s, unif_s, gn_s, total_samples, total_steps, world = reduced
    if total_steps != steps * world:
        raise RuntimeError(
            f"epoch {epoch + 1}: ranks took different numbers of steps ({total_steps:g} in total over {world:g} "
            f"ranks, {steps} here); the data shards are uneven"
        )
    denom = max(total_steps, 1.0)
    return {
        "loss": loss_s / denom,
        "mse": mse_s / denom,
        "uniformity": unif_s / denom,
        "grad_norm": gn_s / denom,
        "lr": lr,
        "steps": steps,
        "samples": int(total_samples),
        "epoch_time_s": elapsed,
        "samples_per_s": total_samples / elapsed if elapsed > 0 else 0.0,
        "step": step,
        "host_reads": reads,
    }


@torch.no_grad()
def validate(
    net: nn.Module,
    schedule: Any,
    batches: Iterable[Mapping[str, torch.Tensor]],
    *,
    device: torch.device,
    persons: str = "first",
    max_batches: int = 8,
    seed: int = 0,
    amp_dtype: Optional[torch.dtype] = None,
) -> dict:
    """Mean diffusion loss of ``net.forward_loss`` over at most ``max_batches`` batches, in eval mode.

    Masking, timesteps and noise come from a fixed seed so numbers are comparable across epochs; the global RNG
    state of the caller is restored. Returns ``val_loss, val_mse, val_batches`` (means over all ranks).
    """
    was_training = net.training
    net.eval()
    acc = torch.zeros(2, dtype=torch.float32, device=device)  # (2,) loss, mse sums: read once at the end
    n = 0
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for i, batch in enumerate(batches):
            if i >= max_batches:
                break
            x_clean, x_view = select_persons(batch, persons)
            with autocast(device, amp_dtype):
                out = net.forward_loss(x_clean.to(device), x_view.to(device), schedule)
            acc += torch.stack([out["loss"].detach().float(), out["mse"].detach().float()])
            n += 1
    net.train(was_training)
    loss_s, mse_s = acc.cpu().tolist()
    loss_s, mse_s, total = _all_reduce_sum([loss_s, mse_s, float(n)], device)
    return {"val_loss": loss_s / max(total, 1.0), "val_mse": mse_s / max(total, 1.0), "val_batches": int(total)}
