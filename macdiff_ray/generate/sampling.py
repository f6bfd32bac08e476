"""Unconditional sampling (paper Table 6): DDIM from pure noise with the condition dropped.

The decoder learnt this mode through condition dropout (MacDiff, and a fine-tuned decoder, which keeps it); the
decoder-only baselines (ddim, mdm) have no condition at all. mae and mamp cannot sample (no diffusion).
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from macdiff_ray.generate.common import CLIP_X0

__all__ = ["SAMPLE_ETA", "sample_batch"]

# DDIM eta of unconditional sampling, chosen on the NW-UCLA TRAINING split (464 samples against 464 real, features of
# the fine-tuned tiny classifier, 110-epoch tiny generator): FID 33.0 (25 steps, eta 0), 35.4 (50, 0), 21.5 (25, 1),
# 21.7 (100, 1). Deterministic DDIM (eta 0, the released code's choice) stays available.
SAMPLE_ETA = 1.0


def sample_batch(model: Any, schedule: Any, n: int, seed: int, *, steps: int = 50, eta: float = 0.0,
                 device: torch.device | str = "cpu", clip_x0: Optional[float] = CLIP_X0) -> torch.Tensor:
    """Unconditional DDIM samples with z dropped: (n, T0, V, C) in the model's normalisation.

    x_T is drawn on CPU from ``seed`` (then moved), the DDIM noise (eta > 0) from a ``device`` generator seeded
    ``seed + 1``: the same seed gives the same samples on any CPU worker."""
    from macdiff_ray.diffusion import ddim_sample

    cfg = model.cfg
    if not cfg.is_diffusion:
        raise ValueError(f"method {cfg.method!r} has no diffusion decoder: it cannot sample")
    device = torch.device(device)
    g_cpu = torch.Generator().manual_seed(int(seed))
    x_T = torch.randn((n, cfg.num_frames, cfg.num_joints, cfg.channels), generator=g_cpu)  # (n, T, V, C)

    def model_fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return model.denoise(x_t, t, None)  # (n, T, V, C) z dropped

    g_dev = torch.Generator(device=device.type).manual_seed(int(seed) + 1)
    return ddim_sample(schedule, model_fn, tuple(x_T.shape), steps=steps, eta=eta, target=cfg.target,
                       generator=g_dev, x_T=x_T.to(device), clip_x0=clip_x0)  # (n, T, V, C)

