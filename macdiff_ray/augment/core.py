"""Diffusion-based augmentation (paper Sec. 3.4; METHOD.md "Diffusion-based augmentation"), pure torch.

For each present person of each labelled sample (all tensors normalised, layout of docs/ARCHITECTURE.md):

1. encode the person WITHOUT masking to its condition z (N', L, D) (``encoder.forward_features``; the pretraining
   ``MacDiff.condition`` always masks, so the unmasked condition is built here from the full-token features);
2. noise it to the medium step t_s: x_ts = sqrt(ab) x0 + sqrt(1 - ab) eps (DDPM eq. 4);
3. denoise once with the conditional decoder: x0_hat = (x_ts - sqrt(1 - ab) eps_hat) / sqrt(ab);
4. x0_hat keeps the source's label (the caller carries labels); absent persons stay exactly zero.

Distance to the source (why augmented samples stay close): with an eps-predicting decoder,
``x0_hat - x0 = sqrt(1/ab - 1) (eps - eps_hat)``, so per person
``rms(x0_hat - x0) <= sqrt(1/ab - 1) (rms(eps) + rms(eps_hat))`` (triangle inequality); a perfect eps predictor
returns the source exactly. :func:`one_step_gap_bound` gives that bound.

Also here: :func:`plan_sources`, which source rows make up one epoch's augmented set.
"""

from __future__ import annotations

import math
from typing import Optional, Protocol

import numpy as np
import torch

from macdiff_ray.diffusion import Schedule, one_step_denoise

__all__ = ["unmasked_condition", "augment_batch", "plan_sources", "num_augmented", "one_step_gap_bound",
           "epoch_chunk_seed"]


class _AugmentModel(Protocol):  # what augment_batch needs of a MacDiff (tests pass oracles with this shape)
    cfg: object
    encoder: torch.nn.Module

    def denoise(self, x_t: torch.Tensor, t: torch.Tensor, z: Optional[torch.Tensor] = None) -> torch.Tensor: ...


def unmasked_condition(model: _AugmentModel, x: torch.Tensor) -> torch.Tensor:
    """Condition from ALL tokens (no masking): x (N, T, V, C) -> z (N, L, D), L = Tp * V, token order of
    ``MacDiff.condition`` (time-major patches, then joints)."""
    tokens = model.encoder.forward_features(x)  # (N, Tp, V, D)
    return tokens.flatten(1, 2)  # (N, L, D)


def _check_t_start(schedule: Schedule, t_start: int) -> int:
    if isinstance(t_start, bool) or not isinstance(t_start, (int, np.integer)):
        raise ValueError(f"t_start: expected an integer, got {t_start!r}")
    if not 0 <= int(t_start) < schedule.num_steps:
        raise ValueError(f"t_start: expected 0 <= t_start < {schedule.num_steps} (the schedule's steps), got {t_start}")
    return int(t_start)


@torch.no_grad()
def augment_batch(
    model: _AugmentModel,
    schedule: Schedule,
    x: torch.Tensor,
    person_valid: torch.Tensor,
    t_start: int,
    generator: Optional[torch.Generator] = None,
    *,
    noise: Optional[torch.Tensor] = None,
    max_persons_per_pass: int = 256,
) -> torch.Tensor:
    """One-step diffusion augmentation of a batch of normalised sequences.

    Args:
        model: a :class:`macdiff_ray.model.MacDiff` (eval mode is the caller's business; dropout-free here anyway
            when frozen) or anything with ``cfg.target``, ``encoder.forward_features`` and ``denoise``.
        schedule: the diffusion schedule the decoder was trained with.
        x: (N, M, T, V, C) float, normalised; absent persons all zero.
        person_valid: (N, M) bool, True where a person is present.
        t_start: schedule index t_s; 0 means "no augmentation" and returns ``x`` exactly (paper's t_s = 0 row).
        generator: draws eps (N, M, T, V, C) on ``generator``'s device (CPU generator -> CPU draw, then moved),
            so the draw for a sample does not depend on which persons are present or how persons are batched.
        noise: (N, M, T, V, C) eps to use instead of drawing (tests, oracles).
        max_persons_per_pass: persons per encoder/decoder pass (memory bound).
    Returns:
        x_aug (N, M, T, V, C), same dtype/device as x; absent persons exactly zero.
    """
    t_s = _check_t_start(schedule, t_start)
    if x.dim() != 5:
        raise ValueError(f"x: expected (N, M, T, V, C), got shape {tuple(x.shape)}")
    n, m = x.shape[:2]
    if person_valid.shape != (n, m) or person_valid.dtype != torch.bool:
        raise ValueError(f"person_valid: expected bool ({n}, {m}), got {person_valid.dtype} {tuple(person_valid.shape)}")
    valid = person_valid.to(x.device)  # (N, M)
    if t_s == 0:
        return x.clone()
    if noise is None:
        gen_dev = generator.device if generator is not None else x.device
        noise = torch.randn(x.shape, generator=generator, device=gen_dev, dtype=torch.float32)  # (N, M, T, V, C)
    if noise.shape != x.shape:
        raise ValueError(f"noise: expected shape {tuple(x.shape)}, got {tuple(noise.shape)}")
    noise = noise.to(device=x.device, dtype=x.dtype)  # (N, M, T, V, C)

    target = getattr(model.cfg, "target", "eps")
    persons = x[valid]  # (P, T, V, C): present persons, each augmented on its own condition
    eps = noise[valid]  # (P, T, V, C)
    out_persons = torch.empty_like(persons)  # (P, T, V, C)
    for a in range(0, persons.shape[0], max_persons_per_pass):
        x0 = persons[a : a + max_persons_per_pass]  # (p, T, V, C)
        z = unmasked_condition(model, x0)  # (p, L, D)

        def model_fn(x_t: torch.Tensor, t: torch.Tensor, z: torch.Tensor = z) -> torch.Tensor:
            return model.denoise(x_t, t, z)  # (p, T, V, C)

        out_persons[a : a + x0.shape[0]] = one_step_denoise(
            schedule, model_fn, x0, t_s, eps[a : a + x0.shape[0]], target
        )  # (p, T, V, C)
    out = torch.zeros_like(x)  # (N, M, T, V, C): absent persons stay exactly zero
    out[valid] = out_persons
    return out


def one_step_gap_bound(schedule: Schedule, t_start: int, rms_eps: float, rms_eps_hat: float) -> float:
    """Upper bound of rms(x0_hat - x0) for one person: sqrt(1/ab - 1) * (rms(eps) + rms(eps_hat))."""
    t_s = _check_t_start(schedule, t_start)
    if t_s == 0:
        return 0.0
    return float(schedule.sqrt_recipm1_ab[t_s]) * (float(rms_eps) + float(rms_eps_hat))


def num_augmented(num_sources: int, ratio: float) -> int:
    """Augmented samples per epoch: ``round(ratio * num_sources)``, at least 1 when ratio > 0."""
    if num_sources < 1:
        raise ValueError(f"num_sources: need at least one labelled source sample, got {num_sources}")
    if not (isinstance(ratio, (int, float)) and math.isfinite(ratio) and ratio > 0):
        raise ValueError(f"ratio: expected a finite number > 0 (lambda of paper Sec. 3.4), got {ratio!r}")
    return max(1, int(round(float(ratio) * num_sources)))


def plan_sources(num_sources: int, ratio: float, seed: int, epoch: int) -> np.ndarray:
    """Source row of each augmented sample of one epoch, int64 (N_aug,), N_aug = :func:`num_augmented`.

    Balanced, not i.i.d.: every source is used ``floor(ratio)`` times, and the fractional remainder
    ``N_aug - floor(ratio) * N`` is a without-replacement draw from a permutation seeded by ``(seed, epoch)``.
    So with ratio 2.0 each source gives exactly two augmentations; with 0.25 a different quarter of the
    sources each epoch (each source used at most once per epoch, i.e. counts differ by at most one). The order
    is shuffled with the same generator, so chunks mix classes.
    """
    n_aug = num_augmented(num_sources, ratio)
    rng = np.random.default_rng([int(seed), int(epoch), 0xA06])
    full, rest = divmod(n_aug, num_sources)
    parts = [np.tile(np.arange(num_sources, dtype=np.int64), full)]
    if rest:
        parts.append(rng.permutation(num_sources)[:rest].astype(np.int64))
    idx = np.concatenate(parts)  # (N_aug,)
    return idx[rng.permutation(n_aug)]  # (N_aug,)


def epoch_chunk_seed(seed: int, epoch: int, chunk: int) -> int:
    """The 63-bit torch seed of one chunk of one epoch: fresh noise per epoch, and the same noise for a chunk
    wherever (and however often) it is computed, so a chunk re-run after an actor died gives the same samples."""
    state = np.random.SeedSequence([int(seed), int(epoch), int(chunk)]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)
