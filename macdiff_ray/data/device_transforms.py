"""The training and evaluation transforms as batched torch operations on any device (issue 16).

With ``PretrainConfig.transform_device = "train"`` Ray Data only decodes the Parquet columns (``make_dataset(...,
transform="decode")``) and these callables run on the training device after ``iter_torch``: the CPU cores then
feed a GPU at the rate at which they decode, not at the rate at which numpy crops, resizes and rotates.

They implement the same laws as :mod:`macdiff_ray.data.transforms` (METHOD.md "Training"), which the tests check
draw by draw where the arithmetic allows it and in distribution where the random streams differ:

1. valid-frame crop: ``p ~ U[crop_min, crop_max]``, ``crop_len = clip(floor(length * p), min(min_frames, length),
   length)``, start uniform in ``[0, length - crop_len]`` (window arithmetic in float64, as numpy), then linear
   resize with ``align_corners=False`` to ``num_frames``;
2. one rotation per sample, one angle per axis ~ U(-rot, rot), ``R = Rz @ Ry @ Rx``, the same for all persons and
   for clean and view;
3. ``x_view = x + N(0, noise_std^2)`` on present persons only;
4. ``(x - mean) / std`` with the benchmark's training statistics, absent persons set back to exactly 0.

Input batch (torch tensors, any device): ``x`` float32 (B, M, T_max, V, C) in metres, ``length`` (B,),
``label`` (B,), optionally ``num_persons`` (B,). Output: ``x``, ``x_view`` float32 (B, M', T0, V, C), ``label``
int64 (B,), ``person_valid`` bool (B, M'), on the input's device (M' = 1 with ``persons="first"``).

Randomness: a :class:`DeviceTrainTransform` with an integer ``seed`` draws each call from a generator on the
batch's device seeded by ``(seed, stream, epoch, call counter)``; ``stream`` separates the ranks of a DDP run
(the numpy transform separates Ray tasks by a fingerprint of the sample ids, which the decoded batch no longer
carries). ``seed=None`` draws from fresh OS entropy.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Optional, Sequence

import numpy as np
import torch

from macdiff_ray.config import ConfigError
from macdiff_ray.data.transforms import (
    MIN_CROP_FRACTION, EvalTransformConfig, NormStats, Persons, TrainTransformConfig,
)

__all__ = [
    "DeviceTrainTransform", "DeviceEvalTransform", "DECODE_COLUMNS", "crop_windows_random", "crop_windows_center",
    "crop_resize", "rotation_matrices", "rotate", "person_mask", "normalise",
]

# What the device transforms read: the columns Ray Data decodes when ``make_dataset(transform="decode")``.
DECODE_COLUMNS = ("x", "length", "num_persons", "label")


def _window_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64


def crop_windows_random(length: torch.Tensor, p: torch.Tensor, u: torch.Tensor,
                        min_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(start (B,), crop_len (B,))`` int64 from lengths (B,), crop ratios p (B,) and uniforms u (B,) in [0, 1):
    the law of :func:`macdiff_ray.data.transforms.crop_windows_random`, element for element."""
    fd = _window_dtype(length.device)
    length = length.to(torch.int64)  # (B,)
    crop_len = torch.floor(length.to(fd) * p.to(fd)).to(torch.int64)  # (B,)
    crop_len = torch.maximum(torch.minimum(crop_len, length), torch.clamp(length, max=min_frames))  # (B,)
    crop_len = torch.clamp(crop_len, min=1)  # (B,)
    start = torch.floor(u.to(fd) * (length - crop_len + 1).to(fd)).to(torch.int64)  # (B,)
    return torch.minimum(start, length - crop_len), crop_len  # (B,), (B,) guards u == 1.0


def crop_windows_center(length: torch.Tensor, crop: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre windows: ``bias = floor((1 - crop) * length / 2)``, ``start = bias``, ``crop_len = length - 2 bias``."""
    fd = _window_dtype(length.device)
    length = length.to(torch.int64)  # (B,)
    bias = torch.floor((1.0 - crop) * length.to(fd) / 2.0).to(torch.int64)  # (B,)
    return bias, torch.clamp(length - 2 * bias, min=1)  # (B,), (B,)


def crop_resize(x: torch.Tensor, start: torch.Tensor, crop_len: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Frames ``[start, start + crop_len)`` of each sample, resized linearly (``align_corners=False``) to
    ``num_frames``. x (B, M, T, V, C); start, crop_len (B,) int64 -> float32 (B, M, num_frames, V, C)."""
    B = x.shape[0]
    fd = _window_dtype(x.device)
    start = start.to(torch.int64)[:, None]  # (B, 1)
    L = crop_len.to(torch.int64)[:, None]  # (B, 1)
    j = torch.arange(num_frames, device=x.device, dtype=fd)[None, :] + 0.5  # (1, T0)
    src = j * (L.to(fd) / num_frames) - 0.5  # (B, T0) position inside the window
    src = torch.minimum(torch.clamp(src, min=0.0), (L - 1).to(fd))  # (B, T0)
    i0 = torch.floor(src).to(torch.int64)  # (B, T0)
    w = (src - i0.to(fd)).to(torch.float32)  # (B, T0) weight of the next frame
    i1 = torch.minimum(i0 + 1, L - 1)  # (B, T0)
    b = torch.arange(B, device=x.device)[:, None]  # (B, 1)
    xt = x.transpose(1, 2)  # (B, T, M, V, C) view: frames on axis 1 for the gather
    g0 = xt[b, start + i0]  # (B, T0, M, V, C)
    g1 = xt[b, start + i1]  # (B, T0, M, V, C)
    out = g0 + (g1 - g0) * w[:, :, None, None, None]  # (B, T0, M, V, C)
    return out.transpose(1, 2).contiguous().to(torch.float32)  # (B, M, T0, V, C)


def rotation_matrices(angles: torch.Tensor) -> torch.Tensor:
    """Angles (B, 3) about x, y, z -> R = Rz @ Ry @ Rx, float32 (B, 3, 3) (built in float64 where available)."""
    a = angles.to(_window_dtype(angles.device))  # (B, 3)
    c, s = torch.cos(a), torch.sin(a)  # (B, 3) each
    one, zero = torch.ones_like(c[:, 0]), torch.zeros_like(c[:, 0])  # (B,)
    rx = torch.stack([one, zero, zero, zero, c[:, 0], -s[:, 0], zero, s[:, 0], c[:, 0]], -1).reshape(-1, 3, 3)
    ry = torch.stack([c[:, 1], zero, s[:, 1], zero, one, zero, -s[:, 1], zero, c[:, 1]], -1).reshape(-1, 3, 3)
    rz = torch.stack([c[:, 2], -s[:, 2], zero, s[:, 2], c[:, 2], zero, zero, zero, one], -1).reshape(-1, 3, 3)
    return (rz @ ry @ rx).to(torch.float32)  # (B, 3, 3)


def rotate(x: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """``x @ R^T`` per sample: x (B, M, T, V, 3), rot (B, 3, 3) -> (B, M, T, V, 3)."""
    if x.shape[-1] != 3:
        raise ValueError(f"rotate: needs C = 3 coordinates, got x of shape {tuple(x.shape)}")
    flat = x.reshape(x.shape[0], -1, 3)  # (B, M*T*V, 3)
    return torch.bmm(flat, rot.transpose(1, 2)).reshape(x.shape)  # (B, M, T, V, 3)


def person_mask(x: torch.Tensor, length: torch.Tensor, num_persons: Optional[torch.Tensor]) -> torch.Tensor:
    """Present persons: ``m < num_persons``, or without that column any non-zero coordinate in the valid frames.
    x (B, M, T, V, C) -> bool (B, M)."""
    B, M, T = x.shape[:3]
    if num_persons is not None:
        return torch.arange(M, device=x.device)[None, :] < num_persons.to(torch.int64).reshape(-1, 1)  # (B, M)
    frames = torch.arange(T, device=x.device)[None, :] < length.to(torch.int64).reshape(-1, 1)  # (B, T)
    nonzero = (x != 0).any(dim=4).any(dim=3)  # (B, M, T)
    return (nonzero & frames[:, None, :]).any(dim=2)  # (B, M)


def normalise(x: torch.Tensor, valid: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``(x - mean) / std`` (float32, the numpy transform's arithmetic), absent persons exactly 0.
    x (B, M, T, V, C), valid (B, M), mean/std (C,)."""
    out = (x - mean) / std  # (B, M, T0, V, C)
    return out * valid[:, :, None, None, None].to(out.dtype)  # (B, M, T0, V, C)


class _DeviceBase:
    def __init__(self, stats: NormStats | Mapping[str, Sequence[float]]):
        self.stats = NormStats.coerce(stats)
        self._cache: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def _stats_on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._cache:
            mean, std = self.stats.arrays()  # (C,) float32 each
            self._cache[device] = (torch.from_numpy(mean).to(device), torch.from_numpy(std).to(device))
        return self._cache[device]

    def _prepare(self, batch: Mapping[str, torch.Tensor], persons: str):
        for key in ("x", "length", "label"):
            if key not in batch:
                raise KeyError(f"{type(self).__name__}: batch lacks column {key!r}; has {sorted(batch)}")
        x = batch["x"].to(torch.float32)  # (B, M, T_max, V, C)
        if x.ndim != 5:
            raise ValueError(f"{type(self).__name__}: x must be (B, M, T, V, C), got shape {tuple(x.shape)}")
        mean, std = self._stats_on(x.device)
        if x.shape[-1] != mean.shape[0]:
            raise ValueError(f"{type(self).__name__}: x has C={x.shape[-1]} coordinates but stats have "
                             f"{mean.shape[0]} (mean={self.stats.mean})")
        length = batch["length"].to(x.device, torch.int64).reshape(-1)  # (B,)
        valid = person_mask(x, length, batch.get("num_persons"))  # (B, M)
        if persons == "first":
            x, valid = x[:, :1], valid[:, :1]  # (B, 1, T_max, V, C), (B, 1)
        label = batch["label"].to(torch.int64).reshape(-1)  # (B,)
        return x, length, valid, label, mean, std


class DeviceTrainTransform(_DeviceBase):
    """Random crop + resize, rotation, view noise, normalisation on the batch's device (module docstring).

    ``DeviceTrainTransform(stats, num_frames=120, min_frames=None, min_crop_fraction=64/120, crop_min=0.5,
    crop_max=1.0, rot=0.3, noise_std=0.005, persons="all", seed=0, stream=0)``; call ``tf(batch, epoch=e)``.
    """

    def __init__(self, stats: NormStats | Mapping[str, Sequence[float]], num_frames: int = 120, *,
                 min_frames: Optional[int] = None, min_crop_fraction: float = MIN_CROP_FRACTION,
                 crop_min: float = 0.5, crop_max: float = 1.0, rot: float = 0.3, noise_std: float = 0.005,
                 persons: Persons = "all", seed: int | None = 0, stream: int = 0):
        super().__init__(stats)
        self.config = TrainTransformConfig(
            num_frames=num_frames, min_frames=min_frames, min_crop_fraction=min_crop_fraction, crop_min=crop_min,
            crop_max=crop_max, rot=rot, noise_std=noise_std, persons=persons,
        )
        for name, v, none_ok in (("seed", seed, True), ("stream", stream, False)):
            if (v is None and not none_ok) or (v is not None and (isinstance(v, bool) or not isinstance(v, int)
                                                                   or v < 0)):
                raise ConfigError(f"DeviceTrainTransform.{name}: expected a non-negative integer, got {v!r}")
        self.seed, self.stream = seed, int(stream)
        self._calls = 0

    @classmethod
    def from_config(cls, stats: NormStats | Mapping[str, Sequence[float]], cfg: TrainTransformConfig, *,
                    seed: int | None = 0, stream: int = 0) -> "DeviceTrainTransform":
        return cls(stats, seed=seed, stream=stream, **dataclasses.asdict(cfg))

    def _generator(self, device: torch.device, epoch: int) -> torch.Generator:
        counter = self._calls
        self._calls += 1
        g = torch.Generator(device=device)
        if self.seed is None:
            g.seed()
        else:
            state = np.random.SeedSequence([self.seed, self.stream, int(epoch), counter]).generate_state(1, np.uint64)
            g.manual_seed(int(state[0]) & 0x7FFF_FFFF_FFFF_FFFF)
        return g

    def __call__(self, batch: Mapping[str, torch.Tensor], *, epoch: int = 0) -> dict[str, torch.Tensor]:
        cfg = self.config
        x, length, valid, label, mean, std = self._prepare(batch, cfg.persons)
        B, dev = x.shape[0], x.device
        g = self._generator(dev, epoch)
        fd = _window_dtype(dev)
        p = cfg.crop_min + (cfg.crop_max - cfg.crop_min) * torch.rand(B, device=dev, dtype=fd, generator=g)  # (B,)
        u = torch.rand(B, device=dev, dtype=fd, generator=g)  # (B,)
        angles = (2.0 * torch.rand(B, 3, device=dev, dtype=fd, generator=g) - 1.0) * cfg.rot  # (B, 3)
        start, crop_len = crop_windows_random(length, p, u, cfg.min_crop_frames)  # (B,), (B,)
        clean = crop_resize(x, start, crop_len, cfg.num_frames)  # (B, M, T0, V, C) metres
        if x.shape[-1] == 3 and cfg.rot > 0:
            clean = rotate(clean, rotation_matrices(angles))  # (B, M, T0, V, C)
        view = clean
        if cfg.noise_std > 0:
            noise = torch.randn(clean.shape, device=dev, dtype=torch.float32, generator=g)  # (B, M, T0, V, C)
            view = clean + noise * (cfg.noise_std * valid[:, :, None, None, None].to(torch.float32))
        return {"x": normalise(clean, valid, mean, std), "x_view": normalise(view, valid, mean, std),
                "label": label, "person_valid": valid}


class DeviceEvalTransform(_DeviceBase):
    """Centre crop (``crop`` x valid length), resize, normalisation on the batch's device; ``x_view`` is ``x``."""

    def __init__(self, stats: NormStats | Mapping[str, Sequence[float]], num_frames: int = 120, *,
                 crop: float = 0.95, persons: Persons = "all"):
        super().__init__(stats)
        self.config = EvalTransformConfig(num_frames=num_frames, crop=crop, persons=persons)

    def __call__(self, batch: Mapping[str, torch.Tensor], *, epoch: int = 0) -> dict[str, torch.Tensor]:
        cfg = self.config
        x, length, valid, label, mean, std = self._prepare(batch, cfg.persons)
        start, crop_len = crop_windows_center(length, cfg.crop)  # (B,), (B,)
        out = normalise(crop_resize(x, start, crop_len, cfg.num_frames), valid, mean, std)  # (B, M, T0, V, C)
        return {"x": out, "x_view": out, "label": label, "person_valid": valid}
