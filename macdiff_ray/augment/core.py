"""Diffusion-based augmentation (paper Sec. 3.4; METHOD.md "Diffusion-based augmentation"), pure torch.

For each present person of each labelled sample (all tensors normalised, layout of docs/ARCHITECTURE.md):

1. encode the person to its condition z: ``condition="masked"`` (default) or ``"full"`` (see below);
2. noise it to the medium step t_s: x_ts = sqrt(ab) x0 + sqrt(1 - ab) eps (DDPM eq. 4);
3. denoise once with the conditional decoder: x0_hat = (x_ts - sqrt(1 - ab) eps_hat) / sqrt(ab);
4. x0_hat keeps the source's label (the caller carries labels); absent persons stay exactly zero.

Distance to the source (why augmented samples stay close): with an eps-predicting decoder,
``x0_hat - x0 = sqrt(1/ab - 1) (eps - eps_hat)``, so per person
``rms(x0_hat - x0) <= sqrt(1/ab - 1) (rms(eps) + rms(eps_hat))`` (triangle inequality); a perfect eps predictor
returns the source exactly. :func:`one_step_gap_bound` gives that bound.

Condition (``condition``):

* ``"masked"`` (default): pretraining conditions. A pass draws a random mask of the pretraining ratio, encodes the
  K visible tokens of the source and predicts eps; every token's eps is taken from a pass in which that token was
  MASKED, the only positions whose output the decoder was trained on under the released code's masked-token loss.
  Two passes cover every token at mask ratio >= 0.5 (the second keeps only tokens the first already covered).
* ``"full"``: the paper's recipe, the encoder sees every token. A model pretrained at mask ratio 0.9 never saw z_local
  at every position, and with the masked-token loss its output at z_local positions was never trained. Measured
  on the NW-UCLA tiny model (all 464 test sequences, t_s = 500): the augmentations move 237 mm from their sources
  against 117 mm for ``"masked"``, their Frechet distance to the clean set (features of the fine-tuned classifier)
  is 0.77 against 0.12, and that classifier's top-1 on them is 40.5% against 43.8% (42.5% on the clean set). In a
  separate diagnostic run, no condition at all (z dropped) gave 124 mm and 0.38.

Also here: :func:`plan_sources`, which source rows make up one epoch's augmented set.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Protocol

import numpy as np
import torch

from macdiff_ray.config import ConfigError
from macdiff_ray.diffusion import Schedule, one_step_denoise

__all__ = ["AUG_CONDITIONS", "FULL_CONDITION_WARNING", "check_aug_condition", "unmasked_condition", "num_mask_passes",
           "masked_passes_predict", "augment_batch", "plan_sources", "num_augmented", "one_step_gap_bound", "epoch_chunk_seed"]


class _AugmentModel(Protocol):  # what augment_batch needs of a MacDiff (tests pass oracles with this shape)
    cfg: object
    encoder: torch.nn.Module

    def denoise(self, x_t: torch.Tensor, t: torch.Tensor, z: Optional[torch.Tensor] = None) -> torch.Tensor: ...


def unmasked_condition(model: _AugmentModel, x: torch.Tensor) -> torch.Tensor:
    """Condition from ALL tokens (no masking): x (N, T, V, C) -> z (N, L, D), L = Tp * V, token order of
    ``MacDiff.condition`` (time-major patches, then joints)."""
    tokens = model.encoder.forward_features(x)  # (N, Tp, V, D)
    return tokens.flatten(1, 2)  # (N, L, D)


AUG_CONDITIONS = ("masked", "full")


FULL_CONDITION_WARNING = (
    "augmentation condition 'full': the encoder sees every token, which a decoder pretrained with masking never "
    "saw. On the NW-UCLA tiny model it moved sequences 2-4x further from their sources than 'masked' (rms "
    "0.33-0.65 against 0.11-0.15 normalised units, benchmarks/augment_quality.py) with far more frame-to-frame "
    "jitter; 'masked' is the default")


def check_aug_condition(condition: str, name: str = "condition (--aug-condition)") -> str:
    """``condition`` if it is one of :data:`AUG_CONDITIONS`, else ConfigError naming ``name``."""
    if condition not in AUG_CONDITIONS:
        raise ConfigError(f"{name}: {condition!r} is not one of {list(AUG_CONDITIONS)}")
    return condition


def num_mask_passes(num_tokens: int, num_visible: int) -> int:
    """Passes :func:`masked_passes_predict` needs so that every token is masked in one of them (2 when K <= L/2)."""
    if not 0 < num_visible < num_tokens:
        raise ValueError(f"masked condition: needs 0 < K={num_visible} < L={num_tokens} visible tokens per pass")
    covered, passes = 0, 0
    while covered < num_tokens:
        covered += (num_tokens - covered) - (num_visible - min(covered, num_visible))  # newly masked tokens
        passes += 1
    return passes


def masked_passes_predict(model: Any, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                          mask_noise: torch.Tensor) -> torch.Tensor:
    """The decoder's prediction for every token of x_t, each taken from a pass where that token was masked.

    x0: (n, T, V, C) the clean source (the encoder sees K = ``cfg.num_visible`` of its tokens per pass); x_t (n, T,
    V, C); t (n,); mask_noise: (P, n, L) uniform draws, P = :func:`num_mask_passes`. Pass p keeps visible the K
    tokens of smallest draw, tokens already covered by earlier passes first, so every token not yet covered is
    masked once at least K are covered. Returns (n, T, V, C).
    """
    from macdiff_ray.model.layers import token_mask_to_elements

    cfg = model.cfg
    n, k, num_tokens = x0.shape[0], cfg.num_visible, cfg.num_tokens
    passes = num_mask_passes(num_tokens, k)
    if tuple(mask_noise.shape) != (passes, n, num_tokens):
        raise ValueError(f"mask_noise: expected shape ({passes}, {n}, {num_tokens}), got {tuple(mask_noise.shape)}")
    out = torch.zeros_like(x_t)  # (n, T, V, C)
    covered = torch.zeros(n, num_tokens, dtype=torch.bool, device=x0.device)  # (n, L)
    for p in range(passes):
        r = mask_noise[p].to(x0.device)  # (n, L) in [0, 1)
        rank = torch.argsort(torch.argsort(torch.where(covered, r - 2.0, r), dim=1), dim=1)  # covered tokens first
        cond = model.encode_visible(x0, rank < k)  # K visible tokens per row
        rows, index = cond.compact()  # (n, K+1, D), (n, L)
        pred = model.denoise(x_t, t, rows, index)  # (n, T, V, C)
        masked = cond.mask  # (n, L)
        el = token_mask_to_elements(masked & ~covered, cfg.num_patches, cfg.num_joints, cfg.patch_len)  # (n,T,V,1)
        out = torch.where(el, pred, out)  # (n, T, V, C)
        covered |= masked
    return out


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
    condition: str = "masked",
    mask_noise: Optional[torch.Tensor] = None,
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
        condition: ``"masked"`` or ``"full"`` (module docstring). ``"masked"`` needs a real MacDiff
            (``encoder.embed``/``_run``, ``cfg.num_visible``) and draws its masks (P, N, M, L) from ``generator``
            right after eps, like eps independent of which persons are present and of the chunking.
        mask_noise: (P, N, M, L) uniform draws for the ``"masked"`` passes instead of drawing (tests).
    Returns:
        x_aug (N, M, T, V, C), same dtype/device as x; absent persons exactly zero.
    """
    t_s = _check_t_start(schedule, t_start)
    check_aug_condition(condition)
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
    if condition == "masked":
        cfg = model.cfg
        shape = (num_mask_passes(cfg.num_tokens, cfg.num_visible), n, m, cfg.num_tokens)
        if mask_noise is None:
            gen_dev = generator.device if generator is not None else x.device
            mask_noise = torch.rand(shape, generator=generator, device=gen_dev)  # (P, N, M, L)
        if tuple(mask_noise.shape) != shape:
            raise ValueError(f"mask_noise: expected shape {shape}, got {tuple(mask_noise.shape)}")
        mask_noise = mask_noise.to(x.device)[:, valid]  # (P, persons, L)

    target = getattr(model.cfg, "target", "eps")
    persons = x[valid]  # (P, T, V, C): present persons, each augmented on its own condition
    eps = noise[valid]  # (P, T, V, C)
    out_persons = torch.empty_like(persons)  # (P, T, V, C)
    for a in range(0, persons.shape[0], max_persons_per_pass):
        x0 = persons[a : a + max_persons_per_pass]  # (p, T, V, C)
        if condition == "full":
            z = unmasked_condition(model, x0)  # (p, L, D)

            def model_fn(x_t: torch.Tensor, t: torch.Tensor, z: torch.Tensor = z) -> torch.Tensor:
                return model.denoise(x_t, t, z)  # (p, T, V, C)
        else:

            r = mask_noise[:, a : a + x0.shape[0]]  # (P, p, L)

            def model_fn(x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor = x0,
                         r: torch.Tensor = r) -> torch.Tensor:
                return masked_passes_predict(model, x0, x_t, t, r)  # (p, T, V, C)

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
