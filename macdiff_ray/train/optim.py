"""AdamW with MAE-style parameter groups and a per-step warmup + half-cosine learning-rate schedule.

METHOD.md: AdamW betas (0.9, 0.95), weight decay 0.05, none on biases and norms; lr warms up linearly for
``warmup_epochs`` then follows a half cosine down to ``min_lr`` at the end of the last epoch.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Optional

import torch
from torch import nn

# Parameter-name fragments that mark embeddings (positional, joint, time, mask tokens): no weight decay on them.
_NO_DECAY_NAME_PARTS = ("pos_embed", "pos_emb", "temporal_embed", "joint_embed", "time_embed", "embedding",
                        "mask_token", "cls_token", "_pos", "pos_")


def _no_decay(name: str, param: torch.Tensor, module: nn.Module) -> bool:
    """True for biases, norm weights, embedding tables and learnable positional embeddings."""
    if param.ndim <= 1:  # biases, LayerNorm/BatchNorm weights, 1-d scalars
        return True
    if isinstance(module, (nn.Embedding, nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)):
        return True
    leaf = name.rsplit(".", 1)[-1]
    return any(part in leaf for part in _NO_DECAY_NAME_PARTS)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: ``decay`` (matrices of linear/conv layers) and ``no_decay`` (see :func:`_no_decay`).

    Each group carries a ``name`` key so logs and tests can tell them apart.
    """
    decay, no_decay = [], []
    seen: set[int] = set()
    for mod_name, module in model.named_modules():
        for p_name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            (no_decay if _no_decay(full, p, module) else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay, "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"},
    ]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float], *,
                    fused: Optional[bool] = None) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`. ``lr`` is the peak (already batch-scaled) rate. ``fused=True``: torch's
    single-kernel AdamW (CUDA/CPU), ``None``: torch's default implementation (foreach where supported)."""
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=tuple(betas), fused=fused)


class WarmupCosine:
    """Per-step schedule: linear warmup 0 -> ``peak`` over ``warmup_steps``, then half cosine to ``floor``.

    ``lr(step)`` for step in [0, total_steps]; after ``total_steps`` it stays at ``floor``.
    """

    def __init__(self, peak: float, floor: float, warmup_steps: int, total_steps: int):
        if total_steps < 1:
            raise ValueError(f"WarmupCosine: total_steps must be >= 1, got {total_steps}")
        if not 0 <= warmup_steps <= total_steps:
            raise ValueError(f"WarmupCosine: warmup_steps {warmup_steps} not in [0, total_steps={total_steps}]")
        if floor > peak:
            raise ValueError(f"WarmupCosine: floor {floor} above peak {peak}")
        self.peak, self.floor = peak, floor
        self.warmup_steps, self.total_steps = warmup_steps, total_steps

    def lr(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.peak * (step + 1) / self.warmup_steps  # never exactly 0: step 0 already learns
        decay_steps = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / decay_steps)
        return self.floor + (self.peak - self.floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Set every group's lr for ``step``; returns it."""
        lr = self.lr(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr


def grad_global_norm(parameters) -> float:
    """L2 norm over all gradients (for logging when no clipping is configured)."""
    norms = [p.grad.detach().norm(2) for p in parameters if p.grad is not None]
    if not norms:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack(norms), 2))


class BudgetCosine:
    """A schedule for a wall-clock budget: linear warmup over ``warmup_steps``, then a half cosine from ``peak``
    to ``floor`` over the TIME left in ``budget_s`` (progress = seconds since warmup ended / seconds the budget
    had left then). On a shared machine the epoch time drifts; a schedule in time still ends at the budget.

    ``spent_s`` and ``warmup_end_s`` restore a resumed run's clock (see :meth:`state`); ``clock`` is injectable
    for tests."""

    def __init__(self, peak: float, floor: float, warmup_steps: int, budget_s: float, *, spent_s: float = 0.0,
                 warmup_end_s: Optional[float] = None, clock: Callable[[], float] = time.perf_counter):
        if not budget_s > 0:
            raise ValueError(f"BudgetCosine: budget_s must be > 0, got {budget_s}")
        if floor > peak:
            raise ValueError(f"BudgetCosine: floor {floor} above peak {peak}")
        self.peak, self.floor, self.warmup_steps, self.budget_s = peak, floor, max(0, int(warmup_steps)), budget_s
        self._clock = clock
        self._t0 = clock() - float(spent_s)
        self.warmup_end_s = warmup_end_s

    def spent(self) -> float:
        """Seconds of the budget used so far (earlier attempts included)."""
        return self._clock() - self._t0

    def progress(self) -> float:
        if self.warmup_end_s is None:
            return 0.0
        left = max(1e-9, self.budget_s - self.warmup_end_s)
        return min(1.0, max(0.0, (self.spent() - self.warmup_end_s) / left))

    def lr(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.peak * (step + 1) / self.warmup_steps
        if self.warmup_end_s is None:
            self.warmup_end_s = self.spent()
        return self.floor + (self.peak - self.floor) * 0.5 * (1.0 + math.cos(math.pi * self.progress()))

    apply = WarmupCosine.apply  # set every group's lr for ``step``; returns it

    def state(self) -> dict:
        return {"spent_s": self.spent(), "warmup_end_s": self.warmup_end_s, "budget_s": self.budget_s}
