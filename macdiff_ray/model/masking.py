"""Masking strategies of the encoder's input (paper Sec. 4.5, Table 7): small pure functions, no model inside.

Every strategy returns ``(ids_keep (N, K), ids_restore (N, L))`` int64 in the MAE convention of
:mod:`macdiff_ray.model.encoder`: ``ids_shuffle`` lists the K kept (visible) tokens first, ``ids_keep =
ids_shuffle[:, :K]``, ``ids_restore = argsort(ids_shuffle)``, and a token is masked where ``ids_restore >= K``.
Tokens are time-major (``l = tp * V + v``, :mod:`macdiff_ray.model.layers`), Tp temporal patches x V joints.
K is the same for every sample of a batch (the encoder runs on a (N, K, D) tensor) and depends only on the
strategy, the ratio r and (Tp, V): :func:`num_kept`.

Strategies (``ModelConfig.masking``):

* ``random`` (default; the paper's): a uniform K-subset, K = round((1 - r) L).
* ``temporal``: whole temporal patches: kp = round((1 - r) Tp) patches keep all V joints, K = kp V.
* ``tube``: runs of ``tube_len`` (5, the paper's) consecutive patches share one joint mask (VideoMAE's tube masking
  along time): in each run kv = round((1 - r) V) joints are kept; the last run is shorter when ``tube_len`` does not
  divide Tp. K = kv Tp.
* ``spatial_temporal``: a joint subset x a patch subset: the product of kv joints and kp patches is kept. Rule:
  kv = round(V sqrt(1 - r)), kp = ceil(K_random / kv) (the fewest patches whose product reaches random masking's
  K), each clipped to [1, V] / [1, Tp]. The paper's shapes (V = 25, Tp = 30, r = 0.9): kv = round(7.91) = 8,
  kp = ceil(75 / 8) = 10, K = 80: "keep 8 of 25 joints and 10 of 30 temporal patches".
* ``motion_aware`` (MAMP's): per token, the motion m = mean |x[t] - x[t-1]| over the patch's frames and coordinates
  (x[-1] := x[0], so the first frame has none); p = softmax(m / (tau max_l m)) per sample with tau the
  ``temperature``; the L - K masked tokens are a sample WITHOUT replacement weighted by p (Gumbel-top-k: the L - K
  largest of log p + Gumbel noise), so high-motion tokens are masked more often. K as ``random``. tau -> inf gives
  ``random``.

Each K is at least 1 (an encoder needs a token) and at most L.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

MASKINGS = ("random", "temporal", "tube", "spatial_temporal", "motion_aware")
TUBE_LEN = 5  # paper Sec. 4.5: "For tube masking, the tube length is set to 5"


def _round_keep(ratio: float, count: int) -> int:
    """round((1 - ratio) count) clipped to [1, count]."""
    return min(count, max(1, int(round((1.0 - ratio) * count))))


def spatial_temporal_shape(ratio: float, num_patches: int, num_joints: int) -> tuple[int, int]:
    """(kv joints, kp patches) kept by ``spatial_temporal`` masking (module docstring)."""
    k_random = _round_keep(ratio, num_patches * num_joints)
    kv = min(num_joints, max(1, int(round(num_joints * math.sqrt(1.0 - ratio)))))
    kp = min(num_patches, max(1, math.ceil(k_random / kv)))
    return kv, kp


def num_kept(strategy: str, ratio: float, num_patches: int, num_joints: int) -> int:
    """K, the tokens the encoder sees per sample under ``strategy`` at mask ratio ``ratio``."""
    if strategy not in MASKINGS:
        raise ValueError(f"masking: {strategy!r} is not one of {list(MASKINGS)}")
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio: expected a value in [0, 1), got {ratio!r}")
    if strategy in ("random", "motion_aware"):
        return _round_keep(ratio, num_patches * num_joints)
    if strategy == "temporal":
        return _round_keep(ratio, num_patches) * num_joints
    if strategy == "tube":
        return _round_keep(ratio, num_joints) * num_patches
    kv, kp = spatial_temporal_shape(ratio, num_patches, num_joints)
    return kv * kp


def _from_scores(scores: torch.Tensor, num_keep: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the ``num_keep`` smallest scores per row: scores (N, L) -> (ids_keep (N, K), ids_restore (N, L))."""
    ids_shuffle = torch.argsort(scores, dim=1)  # (N, L): smallest first = kept
    ids_restore = torch.argsort(ids_shuffle, dim=1)  # (N, L)
    return ids_shuffle[:, :num_keep], ids_restore  # (N, K), (N, L)


def random_masking(n: int, num_tokens: int, num_keep: int, device: torch.device,
                   generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample uniform K-subset (argsort of uniform noise): (ids_keep (N, K), ids_restore (N, L))."""
    noise = torch.rand(n, num_tokens, device=device, generator=generator)  # (N, L)
    return _from_scores(noise, num_keep)


def temporal_masking(n: int, num_patches: int, num_joints: int, ratio: float, device: torch.device,
                     generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole temporal patches kept or masked: a patch's V tokens share one score."""
    kp = _round_keep(ratio, num_patches)
    noise = torch.rand(n, num_patches, 1, device=device, generator=generator)  # (N, Tp, 1)
    # rank of each patch (0 = kept first); a token's score is its patch's rank, ties broken by joint index
    rank = torch.argsort(torch.argsort(noise[..., 0], dim=1), dim=1).to(torch.float32)  # (N, Tp)
    scores = rank[:, :, None] + torch.arange(num_joints, device=device) / (2.0 * num_joints)  # (N, Tp, V)
    return _from_scores(scores.reshape(n, -1), kp * num_joints)


def tube_masking(n: int, num_patches: int, num_joints: int, ratio: float, device: torch.device,
                 generator: Optional[torch.Generator] = None,
                 tube_len: int = TUBE_LEN) -> tuple[torch.Tensor, torch.Tensor]:
    """Runs of ``tube_len`` patches share one joint mask; kv = round((1 - r) V) joints kept in each run."""
    if tube_len < 1:
        raise ValueError(f"tube_len: expected >= 1, got {tube_len}")
    kv = _round_keep(ratio, num_joints)
    runs = math.ceil(num_patches / tube_len)
    noise = torch.rand(n, runs, num_joints, device=device, generator=generator)  # (N, R, V)
    kept_run = torch.argsort(torch.argsort(noise, dim=2), dim=2) < kv  # (N, R, V) kv joints per run
    run_of_patch = torch.arange(num_patches, device=device) // tube_len  # (Tp,)
    kept = kept_run[:, run_of_patch, :]  # (N, Tp, V)
    scores = (~kept).to(torch.float32) + torch.rand(n, num_patches, num_joints, device=device,
                                                    generator=generator) * 0.5  # kept < 0.5 <= masked
    return _from_scores(scores.reshape(n, -1), kv * num_patches)


def spatial_temporal_masking(n: int, num_patches: int, num_joints: int, ratio: float, device: torch.device,
                             generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the product of a random kv-joint subset and a random kp-patch subset (:func:`spatial_temporal_shape`)."""
    kv, kp = spatial_temporal_shape(ratio, num_patches, num_joints)
    pj = torch.rand(n, num_joints, device=device, generator=generator)  # (N, V)
    pt = torch.rand(n, num_patches, device=device, generator=generator)  # (N, Tp)
    keep_j = torch.argsort(torch.argsort(pj, dim=1), dim=1) < kv  # (N, V)
    keep_t = torch.argsort(torch.argsort(pt, dim=1), dim=1) < kp  # (N, Tp)
    kept = keep_t[:, :, None] & keep_j[:, None, :]  # (N, Tp, V)
    scores = (~kept).to(torch.float32) + torch.rand(n, num_patches, num_joints, device=device,
                                                    generator=generator) * 0.5  # kept first
    return _from_scores(scores.reshape(n, -1), kv * kp)


def frame_differences(x: torch.Tensor) -> torch.Tensor:
    """Motion x[t] - x[t-1] of x (N, T, V, C), 0 at the first frame: (N, T, V, C). Also MAMP's regression target."""
    return torch.diff(x, dim=1, prepend=x[:, :1])  # (N, T, V, C)


def token_motion(x: torch.Tensor, patch_len: int) -> torch.Tensor:
    """Per-token motion: x (N, T, V, C) -> (N, L) mean |x[t] - x[t-1]| over each token's frames and coordinates
    (the first frame's difference is 0)."""
    n, t, v, c = x.shape
    d = frame_differences(x.float()).abs()  # (N, T, V, C)
    return d.reshape(n, t // patch_len, patch_len, v, c).mean(dim=(2, 4)).reshape(n, -1)  # (N, L)


def motion_aware_masking(x: torch.Tensor, patch_len: int, num_keep: int, temperature: float,
                         generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """MAMP's motion-aware masking of x (N, T, V, C): the L - K masked tokens are drawn without replacement with
    probabilities softmax(m / (temperature max m)) (module docstring)."""
    if not temperature > 0:
        raise ValueError(f"motion-aware masking: temperature must be > 0, got {temperature!r}")
    m = token_motion(x, patch_len)  # (N, L)
    scale = m.amax(dim=1, keepdim=True).clamp_min(1e-12) * temperature  # (N, 1)
    logp = torch.log_softmax(m / scale, dim=1)  # (N, L)
    u = torch.rand(m.shape, device=x.device, generator=generator).clamp(1e-12, 1.0 - 1e-7)  # (N, L)
    gumbel = -torch.log(-torch.log(u))  # (N, L)
    # Gumbel-top-k: the L - K largest (log p + G) are a weighted sample without replacement; they are MASKED, so
    # they sort last in the ascending order whose first K are kept.
    return _from_scores(logp + gumbel, num_keep)


def mask_tokens(strategy: str, x: torch.Tensor, *, patch_len: int, num_joints: int, ratio: float,
                temperature: float = 0.75, generator: Optional[torch.Generator] = None,
                tube_len: int = TUBE_LEN) -> tuple[torch.Tensor, torch.Tensor]:
    """Dispatch to one strategy for the batch x (N, T, V, C) (only ``motion_aware`` reads its values):
    (ids_keep (N, K), ids_restore (N, L)) with K = :func:`num_kept`."""
    n, t = x.shape[0], x.shape[1]
    num_patches = t // patch_len
    dev = x.device
    if strategy == "random":
        return random_masking(n, num_patches * num_joints, num_kept(strategy, ratio, num_patches, num_joints), dev,
                              generator)
    if strategy == "temporal":
        return temporal_masking(n, num_patches, num_joints, ratio, dev, generator)
    if strategy == "tube":
        return tube_masking(n, num_patches, num_joints, ratio, dev, generator, tube_len)
    if strategy == "spatial_temporal":
        return spatial_temporal_masking(n, num_patches, num_joints, ratio, dev, generator)
    if strategy == "motion_aware":
        return motion_aware_masking(x, patch_len, num_kept(strategy, ratio, num_patches, num_joints), temperature,
                                    generator)
    raise ValueError(f"masking: {strategy!r} is not one of {list(MASKINGS)}")
