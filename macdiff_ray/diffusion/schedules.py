"""Noise schedules, precomputed once in float64.

Index convention (one for the whole project): a timestep index ``t`` in ``0 .. T-1`` names the state after
``t + 1`` forward steps, so ``alphas_cumprod[t] = prod_{i <= t} (1 - beta_i)`` and, without clipping,
``alphas_cumprod[t] = alpha_bar((t + 1) / T) / alpha_bar(0)``. This is the convention of guided-diffusion, which
the released MacDiff code uses, and it reproduces METHOD.md's reference values (inverse-cosine
.998/.826/.652/.506/.355/.174/~0 and cosine 1.0/.972/.846/.492/.143/.024/~0 at t = 0/100/250/500/750/900/999);
reading the index as ``alpha_bar(t / T)`` would give 1.0 and .828 at t = 0 and 100 for inverse-cosine instead.

Schedules (u = t / T, s = 0.008, c0 = cos^2(s / (1 + s) * pi / 2)); every beta is
``min(1 - alpha_bar((t + 1) / T) / alpha_bar(t / T), 0.999)``:

- ``cosine``: ``alpha_bar(u) = cos^2((u + s) / (1 + s) * pi / 2)`` (Nichol & Dhariwal).
- ``tau``: ``alpha_bar(u) = (1 + tau) c0 (1 - u) - tau cos^2((u + s) / (1 + s) * pi / 2)``; tau = 1 is the
  paper's "inverse-cosine" (default, its best ablation: 86.4 NTU60 xsub linear probe), tau = -1 equals cosine,
  tau = 0 is linear in alpha_bar.
- ``linear``: DDPM linear betas from 1e-4 to 0.02, scaled by 1000 / T so that other step counts keep the same
  total noise (the guided-diffusion convention); equal to the DDPM values at T = 1000.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Literal

import torch

from macdiff_ray.config import ConfigError

SCHEDULES = ("tau", "cosine", "linear")
_S = 0.008
_MAX_BETA = 0.999


@dataclass(frozen=True)
class DiffusionConfig:
    """Diffusion process settings.

    num_steps: T, the number of training timesteps (1000 in the paper).
    schedule: ``tau`` (default; paper's inverse-cosine when tau = 1), ``cosine`` or ``linear``.
    tau: the mixture parameter of the ``tau`` schedule (ignored by the others).
    """

    num_steps: int = 1000
    schedule: Literal["tau", "cosine", "linear"] = "tau"
    tau: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.num_steps, int) or isinstance(self.num_steps, bool) or self.num_steps < 2:
            raise ConfigError(f"DiffusionConfig.num_steps: expected an integer >= 2, got {self.num_steps!r}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"DiffusionConfig.schedule: {self.schedule!r} is not one of {list(SCHEDULES)}")
        if not math.isfinite(float(self.tau)):
            raise ConfigError(f"DiffusionConfig.tau: expected a finite number, got {self.tau!r}")


@dataclass(frozen=True)
class Schedule:
    """Precomputed float64 buffers of one schedule, each of shape (T,) on the CPU.

    Index ``t`` is the state after ``t + 1`` forward steps (see the module docstring).
    ``alphas_cumprod_prev[t]`` is ``alphas_cumprod[t - 1]`` with 1.0 at t = 0.
    """

    config: DiffusionConfig
    betas: torch.Tensor
    alphas_cumprod: torch.Tensor
    alphas_cumprod_prev: torch.Tensor
    sqrt_ab: torch.Tensor
    sqrt_1m_ab: torch.Tensor
    sqrt_recip_ab: torch.Tensor
    sqrt_recipm1_ab: torch.Tensor

    @property
    def num_steps(self) -> int:
        return int(self.betas.shape[0])

    def to(self, device: torch.device | str) -> "Schedule":
        """A copy whose buffers live on ``device`` (still float64), to avoid a host copy per call on CUDA."""
        kw = {f.name: getattr(self, f.name) for f in fields(self)}
        for k, v in kw.items():
            if isinstance(v, torch.Tensor):
                kw[k] = v.to(device)
        return Schedule(**kw)


def _cos2(u: torch.Tensor) -> torch.Tensor:
    return torch.cos((u + _S) / (1 + _S) * math.pi / 2) ** 2


def alpha_bar_fn(cfg: DiffusionConfig, u: torch.Tensor) -> torch.Tensor:
    """Continuous alpha_bar(u) for u in [0, 1] (float64), for the ``cosine`` and ``tau`` schedules."""
    u = u.to(torch.float64)
    if cfg.schedule == "cosine":
        return _cos2(u)
    if cfg.schedule == "tau":
        c0 = math.cos(_S / (1 + _S) * math.pi / 2) ** 2
        return (1 + cfg.tau) * c0 * (1 - u) - cfg.tau * _cos2(u)
    raise ConfigError(f"DiffusionConfig.schedule: {cfg.schedule!r} has no closed-form alpha_bar(u)")


def _betas(cfg: DiffusionConfig) -> torch.Tensor:
    T = cfg.num_steps
    if cfg.schedule == "linear":
        scale = 1000.0 / T
        return torch.linspace(scale * 1e-4, scale * 0.02, T, dtype=torch.float64)  # (T,)
    if cfg.schedule not in SCHEDULES:
        raise ConfigError(f"DiffusionConfig.schedule: {cfg.schedule!r} is not one of {list(SCHEDULES)}")
    u = torch.arange(T + 1, dtype=torch.float64) / T  # (T+1,)
    ab = alpha_bar_fn(cfg, u)  # (T+1,)
    # alpha_bar must stay positive and decrease, or the betas are meaningless (e.g. tau < -1 goes negative).
    bad = (ab[:-1] <= 0) | (ab[1:] > ab[:-1])
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0])
        raise ConfigError(
            f"DiffusionConfig(schedule={cfg.schedule!r}, tau={cfg.tau}): alpha_bar is not positive and "
            f"decreasing (alpha_bar({i}/{T}) = {float(ab[i]):.4g}, alpha_bar({i + 1}/{T}) = {float(ab[i + 1]):.4g})"
        )
    return torch.clamp(1 - ab[1:] / ab[:-1], max=_MAX_BETA)  # (T,)


def make_schedule(cfg: DiffusionConfig) -> Schedule:
    """Build the float64 buffers of ``cfg`` (all of shape (T,), on the CPU)."""
    if not isinstance(cfg, DiffusionConfig):
        raise TypeError(f"make_schedule expects a DiffusionConfig, got {type(cfg).__name__}")
    betas = _betas(cfg)  # (T,)
    ab = torch.cumprod(1.0 - betas, dim=0)  # (T,)
    ab_prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])  # (T,)
    return Schedule(
        config=cfg,
        betas=betas,
        alphas_cumprod=ab,
        alphas_cumprod_prev=ab_prev,
        sqrt_ab=ab.sqrt(),
        sqrt_1m_ab=(1.0 - ab).sqrt(),
        sqrt_recip_ab=(1.0 / ab).sqrt(),
        sqrt_recipm1_ab=(1.0 / ab - 1.0).sqrt(),
    )
