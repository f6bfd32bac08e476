"""Gaussian diffusion as pure functions of (schedule, x0, t, noise); no model inside.

Layout: any tensor ``x`` of shape (N, ...) (in this project (N, T, V, C)); ``t`` is a (N,) int64 tensor of timestep
indices in ``0 .. T-1`` (index convention in :mod:`macdiff_ray.diffusion.schedules`). A model enters only as a
callable ``model_fn(x_t (N, ...), t (N,)) -> prediction (N, ...)`` that closes over its condition; ``target``
says whether it predicts the noise (``"eps"``, the paper's choice) or the clean sample (``"x0"``).
Schedule buffers stay float64; coefficients are cast to the data's dtype at the point of use.
"""

from __future__ import annotations

from typing import Callable, Literal, Optional, Sequence

import torch

from macdiff_ray.diffusion.schedules import Schedule

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Target = Literal["eps", "x0"]
TARGETS = ("eps", "x0")


def _check_target(target: str) -> None:
    if target not in TARGETS:
        raise ValueError(f"target: {target!r} is not one of {list(TARGETS)}")


def _check_t(s: Schedule, t: torch.Tensor, n: int) -> None:
    if t.dtype not in (torch.int64, torch.int32) or t.shape != (n,):
        raise ValueError(f"t: expected an int64 tensor of shape ({n},), got {t.dtype} {tuple(t.shape)}")


def extract(arr: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``arr[t]`` shaped (N, 1, ..., 1) to broadcast against ``like`` (N, ...), in ``like``'s dtype and device.

    The gather happens in float64; only the gathered coefficients are cast.
    """
    out = arr.to(t.device)[t]  # (N,) float64
    return out.to(device=like.device, dtype=like.dtype).reshape(-1, *([1] * (like.dim() - 1)))  # (N, 1, ...)


def q_sample(s: Schedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Forward process sample x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps (DDPM eq. 4). Shapes: all (N, ...)."""
    _check_t(s, t, x0.shape[0])
    return extract(s.sqrt_ab, t, x0) * x0 + extract(s.sqrt_1m_ab, t, x0) * noise  # (N, ...)


def x0_from_eps(s: Schedule, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """x0 = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t). Shapes: all (N, ...)."""
    return extract(s.sqrt_recip_ab, t, x_t) * x_t - extract(s.sqrt_recipm1_ab, t, x_t) * eps  # (N, ...)


def eps_from_x0(s: Schedule, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """eps = (x_t - sqrt(ab_t) x0) / sqrt(1 - ab_t). Shapes: all (N, ...)."""
    return (extract(s.sqrt_recip_ab, t, x_t) * x_t - x0) / extract(s.sqrt_recipm1_ab, t, x_t)  # (N, ...)


def training_loss(
    s: Schedule,
    model_fn: ModelFn,
    x0: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    target: Target = "eps",
    weight: Optional[torch.Tensor] = None,
) -> dict:
    """Simple diffusion loss (DDPM L_simple; MacDiff paper eq. 6 with ``weight=None``).

    x0, noise: (N, ...); t: (N,) int64. ``weight``: optional non-negative mask broadcastable to x0 (e.g. 1 on
    masked tokens, 0 elsewhere, for the released code's masked-token loss); each sample's loss is the weighted
    mean of its squared errors, and the batch loss the mean over samples (a sample with zero weight counts 0).
    Returns ``{"loss": (), "per_sample": (N,), "pred": (N, ...), "x_t": (N, ...)}``; the error is taken in at
    least float32 so a bf16 prediction (autocast) does not lose the loss's precision.
    """
    _check_target(target)
    x_t = q_sample(s, x0, t, noise)  # (N, ...)
    pred = model_fn(x_t, t)  # (N, ...)
    if pred.shape != x0.shape:
        raise ValueError(f"model_fn returned shape {tuple(pred.shape)}, expected {tuple(x0.shape)}")
    goal = noise if target == "eps" else x0  # (N, ...)
    per_sample = weighted_mse(pred, goal, weight)  # (N,)
    return {"loss": per_sample.mean(), "per_sample": per_sample, "pred": pred, "x_t": x_t}


def weighted_mse(pred: torch.Tensor, goal: torch.Tensor, weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-sample mean squared error (N,) of pred against goal (both (N, ...)), in at least float32.

    ``weight``: optional non-negative mask broadcastable to them; a sample's error is then the weighted mean (a
    sample with zero weight gives 0)."""
    dt = torch.promote_types(goal.dtype, torch.float32)
    err = (pred.to(dt) - goal.to(dt)).pow(2)  # (N, ...)
    n = err.shape[0]
    if weight is None:
        return err.reshape(n, -1).mean(dim=1)  # (N,)
    w = torch.broadcast_to(weight.to(dt), err.shape).reshape(n, -1)  # (N, P)
    return (err.reshape(n, -1) * w).sum(dim=1) / w.sum(dim=1).clamp_min(1e-12)  # (N,)


def _predict(
    s: Schedule,
    model_fn: ModelFn,
    x_t: torch.Tensor,
    t: torch.Tensor,
    target: Target,
    model_fn_uncond: Optional[ModelFn],
    guidance_weight: float,
    clip_x0: Optional[float] = None,
    recon: Optional[tuple[torch.Tensor, torch.Tensor, float]] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(eps_hat, x0_hat), both (N, ...), with classifier-free guidance eps = eps_c + w (eps_c - eps_u).

    ``clip_x0``: clamp x0_hat to [-c, c] and re-derive eps_hat from it (guided-diffusion's ``clip_denoised``).
    Needed at the first sampling steps of schedules whose alpha_bar reaches ~0 at t = T-1 (inverse-cosine: about
    1e-6): there x0_hat = (x_t - sqrt(1 - ab) eps_hat) / sqrt(ab) multiplies any eps error by ~1000.

    ``recon = (x_known (N, ...), known (N, ...) bool, w)``: reconstruction guidance of weight w (see :func:`inpaint`).
    The gradient is per sample (the model mixes no samples) and taken on the unclamped x0_hat; the guided x0 is
    clamped afterwards and eps re-derived from it.
    """

    def as_eps(x: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        return pred if target == "eps" else eps_from_x0(s, x, t, pred)

    def x0_hat(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        eps = as_eps(x, model_fn(x, t).to(x.dtype))  # (N, ...)
        if model_fn_uncond is not None and guidance_weight != 0.0:
            eps_u = as_eps(x, model_fn_uncond(x, t).to(x.dtype))  # (N, ...)
            eps = eps + guidance_weight * (eps - eps_u)  # (N, ...)
        return eps, x0_from_eps(s, x, t, eps)  # (N, ...) x2

    if recon is None:
        eps, x0 = x0_hat(x_t)  # (N, ...) x2
    else:
        x_known, known, weight = recon
        with torch.enable_grad():
            xg = x_t.detach().requires_grad_(True)  # (N, ...)
            _, x0 = x0_hat(xg)  # (N, ...)
            err = torch.where(known, x0 - x_known, torch.zeros_like(x0)).pow(2).sum()  # ()
            (grad,) = torch.autograd.grad(err, xg)  # (N, ...)
        x0 = x0.detach() - (0.5 * weight) * extract(s.sqrt_ab, t, x_t) * grad  # (N, ...)
    if clip_x0 is not None:
        x0 = x0.clamp(-clip_x0, clip_x0)  # (N, ...)
    if clip_x0 is not None or recon is not None:
        eps = eps_from_x0(s, x_t, t, x0)  # (N, ...) consistent with the clamped / guided x0
    return eps, x0


def respaced_timesteps(num_steps: int, steps: int) -> list[int]:
    """``steps`` increasing timestep indices spread evenly over ``0 .. num_steps-1``, always ending at T-1."""
    if not 1 <= steps <= num_steps:
        raise ValueError(f"steps: expected 1 <= steps <= {num_steps}, got {steps}")
    if steps == 1:  # linspace would give [0]: one step must still start at the top
        return [num_steps - 1]
    seq = torch.linspace(0, num_steps - 1, steps, dtype=torch.float64).round().long().tolist()
    return sorted(set(int(i) for i in seq))


# Sampling starts at the last index whose alpha_bar is at least this. The tau-mixture and cosine schedules reach
# alpha_bar ~ 2e-6 at t = T-1; an eps-predicting model's x0 estimate there is its eps error times ~700, and DDIM
# carries that garbage on (measured on a trained NW-UCLA tiny model: samples of std 4.7 normalised units, against
# 0.27-0.47 when starting at alpha_bar >= 0.02). Starting from pure noise at alpha_bar = 0.01 mismatches the true
# marginal by only sqrt(0.01) = 0.1 of signal.
MIN_START_ALPHA_BAR = 1e-2


def sampling_start(s: Schedule, min_alpha_bar: float = MIN_START_ALPHA_BAR) -> int:
    """The largest timestep index whose alpha_bar >= ``min_alpha_bar`` (T-1 when none is below it)."""
    ok = torch.nonzero(s.alphas_cumprod >= min_alpha_bar).flatten()
    return int(ok.max()) if len(ok) else s.num_steps - 1


def _ab(s: Schedule, t: int) -> float:
    return 1.0 if t < 0 else float(s.alphas_cumprod[t])


def ddim_step(
    s: Schedule,
    x_t: torch.Tensor,
    t: int,
    t_prev: int,
    eps: torch.Tensor,
    x0: torch.Tensor,
    eta: float,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """One DDIM update from index ``t`` to ``t_prev`` (``-1`` = clean data), Song et al. 2021 eq. 12.

    x_t, eps, x0: (N, ...). Returns x_{t_prev} (N, ...).
    """
    ab_t, ab_p = _ab(s, t), _ab(s, t_prev)
    # (1) sigma_t(eta) = eta * sqrt((1 - ab_prev) / (1 - ab_t)) * sqrt(1 - ab_t / ab_prev)   (eq. 16)
    sigma = eta * ((1 - ab_p) / (1 - ab_t)) ** 0.5 * (1 - ab_t / ab_p) ** 0.5
    # (2) "predicted x0" term: sqrt(ab_prev) * x0_hat   (eq. 12, first term)
    out = (ab_p**0.5) * x0  # (N, ...)
    # (3) "direction pointing to x_t": sqrt(1 - ab_prev - sigma^2) * eps_hat   (eq. 12, second term)
    out = out + max(1 - ab_p - sigma**2, 0.0) ** 0.5 * eps  # (N, ...)
    # (4) random noise sigma_t * eps_t   (eq. 12, third term); none when eta = 0 (deterministic DDIM)
    if sigma > 0:
        out = out + sigma * torch.randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
    return out


def ddim_sample(
    s: Schedule,
    model_fn: ModelFn,
    shape: Sequence[int],
    *,
    steps: int = 50,
    eta: float = 0.0,
    target: Target = "eps",
    model_fn_uncond: Optional[ModelFn] = None,
    guidance_weight: float = 0.0,
    generator: Optional[torch.Generator] = None,
    x_T: Optional[torch.Tensor] = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    clip_x0: Optional[float] = None,
) -> torch.Tensor:
    """DDIM sampling over ``steps`` respaced timesteps; eta = 0 is deterministic given x_T.

    shape: (N, ...); returns x_0 of that shape. ``x_T`` (N, ...) overrides the initial Gaussian draw.
    Classifier-free guidance uses ``model_fn_uncond`` (the model with its condition dropped) and weight w.
    """
    _check_target(target)
    if x_T is None:
        x = torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)  # (N, ...)
    else:
        if tuple(x_T.shape) != tuple(shape):
            raise ValueError(f"x_T: shape {tuple(x_T.shape)} differs from shape {tuple(shape)}")
        x = x_T
    seq = respaced_timesteps(sampling_start(s) + 1, steps)  # 0 .. t_start
    n = x.shape[0]
    for i in reversed(range(len(seq))):
        t, t_prev = seq[i], (seq[i - 1] if i > 0 else -1)
        tt = torch.full((n,), t, dtype=torch.long, device=x.device)  # (N,)
        eps, x0 = _predict(s, model_fn, x, tt, target, model_fn_uncond, guidance_weight, clip_x0)  # (N, ...) x2
        x = ddim_step(s, x, t, t_prev, eps, x0, eta, generator)  # (N, ...)
    return x


def one_step_denoise(
    s: Schedule,
    model_fn: ModelFn,
    x0: torch.Tensor,
    t_s: int | torch.Tensor,
    noise: torch.Tensor,
    target: Target = "eps",
) -> torch.Tensor:
    """Diffusion-based augmentation (paper Sec. 3.4): noise x0 to t_s, predict once, return x0_hat.

    x0, noise: (N, ...); t_s: an int or a (N,) int tensor. ``t_s = 0`` is read as "no noise" (the paper's
    t_s = 0 row, i.e. no augmentation) and returns x0 exactly; any t_s >= 1 is the schedule index t_s.
    Returns x0_hat = (x_ts - sqrt(1 - ab) eps_hat) / sqrt(ab), shape (N, ...).
    """
    _check_target(target)
    n = x0.shape[0]
    if isinstance(t_s, int):
        t = torch.full((n,), t_s, dtype=torch.long, device=x0.device)  # (N,)
    else:
        t = t_s.to(device=x0.device, dtype=torch.long)  # (N,)
    if t.shape != (n,) or bool((t < 0).any()) or bool((t >= s.num_steps).any()):
        raise ValueError(f"t_s: expected values in [0, {s.num_steps - 1}] for {n} samples, got {t_s!r}")
    clean = t == 0  # (N,)
    if bool(clean.all()):
        return x0.clone()
    x_t = q_sample(s, x0, t, noise)  # (N, ...)
    pred = model_fn(x_t, t).to(x0.dtype)  # (N, ...)
    x0_hat = x0_from_eps(s, x_t, t, pred) if target == "eps" else pred  # (N, ...)
    keep = clean.reshape(-1, *([1] * (x0.dim() - 1)))  # (N, 1, ...)
    return torch.where(keep, x0, x0_hat)  # (N, ...)


def inpaint(
    s: Schedule,
    model_fn: ModelFn,
    x_known: torch.Tensor,
    known_mask: torch.Tensor,
    *,
    steps: int = 50,
    resample: int = 1,
    eta: float = 1.0,
    target: Target = "eps",
    generator: Optional[torch.Generator] = None,
    x_T: Optional[torch.Tensor] = None,
    model_fn_uncond: Optional[ModelFn] = None,
    guidance_weight: float = 0.0,
    clip_x0: Optional[float] = None,
    recon_guidance: float = 0.0,
    x_init: Optional[torch.Tensor] = None,
    init_strength: float = 1.0,
) -> torch.Tensor:
    """RePaint-style inpainting (Lugmayr et al. 2022, Alg. 1) on respaced DDIM steps.

    x_known: (N, ...) data (values under ``known_mask == False`` are ignored); known_mask: bool, broadcastable to
    x_known, True where the entry is observed. At every step the known entries are replaced by a forward sample
    q(x_{t_prev} | x_known) and the unknown ones come from a DDIM step (``eta = 1`` by default: stochastic, as
    RePaint's DDPM steps); each step is repeated ``resample`` times, jumping back with fresh noise in between.

    ``recon_guidance`` w > 0 adds reconstruction guidance (Ho et al. 2022, "Video Diffusion Models", eq. 7): the
    x0 estimate becomes ``x0_hat - w sqrt(ab_t) / 2 * grad_{x_t} ||known * (x_known - x0_hat)||^2``, which pulls the
    unknown entries of x_t towards values from which the model predicts the observed entries correctly
    (replacement alone only lets information flow through the model's attention and gives incoherent fills when
    the model is weak). Costs one backward pass of ``model_fn`` per step; ``model_fn`` must be differentiable
    with respect to x_t.

    ``x_init`` with ``init_strength`` s < 1 starts the chain part-way, as SDEdit (Meng et al. 2022) does: from a
    forward sample of ``x_init`` (a first guess of the whole sequence, e.g. a linear interpolation of the gaps) at
    the timestep s of the way to the usual start, with ``round(s * steps)`` (at least 1) of the DDIM steps. s = 1
    (the default) starts from pure noise and ignores ``x_init``.
    The known entries of the result equal ``x_known`` exactly. Returns (N, ...).
    """
    _check_target(target)
    if not 0.0 < init_strength <= 1.0:
        raise ValueError(f"init_strength: expected 0 < s <= 1, got {init_strength}")
    if init_strength < 1.0 and x_init is None:
        raise ValueError("init_strength < 1 needs x_init (the first guess the chain starts from)")
    if x_init is not None and x_init.shape != x_known.shape:
        raise ValueError(f"x_init: expected shape {tuple(x_known.shape)}, got {tuple(x_init.shape)}")
    if resample < 1:
        raise ValueError(f"resample: expected >= 1, got {resample}")
    if recon_guidance < 0:
        raise ValueError(f"recon_guidance: expected >= 0, got {recon_guidance}")
    m = torch.broadcast_to(known_mask.to(torch.bool), x_known.shape)  # (N, ...)
    recon = (x_known, m, recon_guidance) if recon_guidance > 0 else None
    dev, dt = x_known.device, x_known.dtype
    n = x_known.shape[0]

    def randn() -> torch.Tensor:
        return torch.randn(x_known.shape, generator=generator, device=dev, dtype=dt)  # (N, ...)

    x = randn() if x_T is None else x_T  # (N, ...)
    t_first = sampling_start(s)
    if init_strength < 1.0:  # SDEdit: start at a fraction of the way, from a forward sample of the first guess
        t_first = max(0, round(init_strength * t_first))
        steps = max(1, min(t_first + 1, round(init_strength * steps)))
        x = q_sample(s, x_init, torch.full((n,), t_first, dtype=torch.long, device=dev), randn())  # (N, ...)
    seq = respaced_timesteps(t_first + 1, steps)  # 0 .. t_first
    for i in reversed(range(len(seq))):
        t, t_prev = seq[i], (seq[i - 1] if i > 0 else -1)
        tt = torch.full((n,), t, dtype=torch.long, device=dev)  # (N,)
        for r in range(resample):
            # (1) unknown part: one reverse DDIM step t -> t_prev from the current sample
            eps, x0 = _predict(s, model_fn, x, tt, target, model_fn_uncond, guidance_weight, clip_x0, recon)
            x_unknown = ddim_step(s, x, t, t_prev, eps, x0, eta, generator)  # (N, ...)
            # (2) known part: a forward sample of the observed data at t_prev (the data itself at t_prev = -1)
            if t_prev >= 0:
                tp = torch.full((n,), t_prev, dtype=torch.long, device=dev)  # (N,)
                x_kn = q_sample(s, x_known, tp, randn())  # (N, ...)
            else:
                x_kn = x_known
            x_prev = torch.where(m, x_kn, x_unknown)  # (N, ...)
            # (3) resampling: diffuse t_prev -> t again, x_t = sqrt(ab_t/ab_p) x_p + sqrt(1 - ab_t/ab_p) eps
            if r < resample - 1 and t_prev >= 0:
                ratio = _ab(s, t) / _ab(s, t_prev)
                x = ratio**0.5 * x_prev + (1 - ratio) ** 0.5 * randn()  # (N, ...)
            else:
                x = x_prev
    return torch.where(m, x_known, x)  # (N, ...) known entries restored exactly
