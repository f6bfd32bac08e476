"""Reconstruction of occluded motion (paper Sec. 4.4, Table 5): RePaint-style DDIM inpainting under a choice of
decoder conditions, and the regression of the mae baseline. Pure torch, no Ray.

Conditions (``condition``; :func:`resolve_condition` picks the default from the checkpoint):

* ``global`` (the default for a fine-tuned decoder, the paper's protocol): z_global alone, broadcast to every
  token, the mean of the encoder's outputs on a fresh uniform draw of K = ``num_visible`` (the pretraining count) of
  the fully observed tokens at every model call; the condition the decoder was fine-tuned on
  (:mod:`macdiff_ray.train.decoder_finetune`, encoder view ``masked``).
* ``global-all``: z_global of every observed token at once (a decoder fine-tuned with encoder view ``full``).
* ``visible`` (the default for a pretraining checkpoint): the pretraining condition with "masked tokens = occluded
  tokens, and then some". At every model call the encoder sees a fresh uniform draw of K of the fully observed
  tokens; every other token, occluded or not drawn, is a masked position filled with the mean of the drawn
  outputs. A token (patch_len frames x one joint) that is only partly occluded counts as occluded. A sample with no
  observed token gets z dropped.
* ``visible-all``: the encoder sees every observed token at once. Out of distribution for a model pretrained at
  mask ratio 0.9: the decoder never saw z_local at 90% of the positions, and with the released code's masked-token
  loss its output at z_local positions was never trained. Measured on the NW-UCLA tiny model (training split, 20
  occluded frames): 296 mm against 216 mm for ``visible``, and worse than no condition.
* ``zeroed``: the encoder sees all tokens of the input with the occluded entries set to 0 (the normalised mean).
* ``none``: unconditional, z dropped (the only one of the decoder-only baselines ddim and mdm).

Reconstruction guidance (``recon_guidance`` w, :func:`macdiff_ray.diffusion.inpaint`) corrects every x0 estimate
by the gradient of its error on the observed entries; w = 0 is RePaint's replacement alone (the paper's protocol).

The mae baseline has no diffusion: its decoder regresses the coordinates from the ``visible`` (or
``visible-all``) condition in one pass; with more observed tokens than K the prediction is the mean over
:data:`MAE_DRAWS` draws. mamp predicts motion, not coordinates, and cannot reconstruct (as the paper says).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

import torch

from macdiff_ray.config import ConfigError
from macdiff_ray.generate.common import CLIP_X0

__all__ = ["CONDITIONS", "INITS", "RECON_GUIDANCE", "RESAMPLE", "MAE_DRAWS", "resolve_condition", "default_guidance",
           "default_resample", "check_init",
           "visible_token_mask", "visible_condition", "draw_visible_subset", "reconstruct_batch"]

CONDITIONS = ("auto", "global", "global-all", "visible", "visible-all", "zeroed", "none")
# The conditions each method's model can take ("auto" aside).
METHOD_CONDITIONS = {
    "macdiff": ("global", "global-all", "visible", "visible-all", "zeroed", "none"),
    "ddim": ("none",), "mdm": ("none",),
    "mae": ("visible", "visible-all"),
    "mamp": (),
}
# Reconstruction-guidance weight of the `visible` protocol (diffusion.inpaint), chosen on the NW-UCLA TRAINING split
# (40 persons, 25 DDIM steps, tiny model pretrained 110 epochs; MPJPE mm for 20 occluded frames / occluded left arm):
# w = 0: 202 / 379, 1: 151 / 287, 2: 134 / 239, 3: 129 / 223, 4: 129 / 224. The 80-epoch model: w = 2: 150 / 231,
# 4: 160 / 229. The paper's protocol (fine-tuned decoder, global condition) is RePaint's replacement: w = 0.
RECON_GUIDANCE = 3.0
# Where the reverse chain starts (``init``): ``noise`` (RePaint, the paper's protocol), or ``interpolation``: SDEdit
# from the linear interpolation of the gaps over time, ``init_strength`` of the way (diffusion.inpaint). The
# interpolation needs a known frame of every joint: it fits frame occlusions, not whole body parts.
INITS = ("noise", "interpolation")
MAE_DRAWS = 10  # mae: predictions averaged over this many K-subsets of the observed tokens


def resolve_condition(condition: str, method: str, decoder_finetune: Optional[Mapping[str, Any]]) -> str:
    """The condition a reconstruction runs under: ``auto`` becomes the checkpoint's protocol (``global`` /
    ``global-all`` for a fine-tuned decoder, ``visible`` for a MacDiff or mae pretraining checkpoint, ``none``
    for ddim / mdm); an explicit one is checked against what the method's model can take."""
    if condition not in CONDITIONS:
        raise ConfigError(f"condition (--condition): {condition!r} is not one of {list(CONDITIONS)}")
    allowed = METHOD_CONDITIONS.get(method, ())
    if not allowed:
        raise ConfigError(f"method {method!r} predicts motion (frame differences), not coordinates: it cannot "
                          "reconstruct a sequence (paper Sec. 4.4)")
    if condition == "auto":
        if decoder_finetune:
            return "global" if decoder_finetune.get("encoder_view", "masked") == "masked" else "global-all"
        return allowed[0] if method != "macdiff" else "visible"
    if condition not in allowed:
        raise ConfigError(f"condition (--condition): {condition!r} does not fit a {method!r} checkpoint; it takes "
                          f"{list(allowed)}")
    return condition


# RePaint's resampling (``resample`` r: each DDIM step repeated r times, jumping back with fresh noise in between),
# measured on the 35-minute NW-UCLA tiny checkpoint (128 test sequences, 50 DDIM steps; MPJPE mm for 3 / 5 / 11 of
# 32 frames, and the arms): its fine-tuned decoder went from 95.0 / 122.9 / 216.5 and 247.5 / 271.9 at r = 1 to
# 61.1 / 81.9 / 160.9 and 215.4 / 235.8 at r = 5; with guidance 3, from 56.4 / 75.3 / 156.3 to 46.4 / 61.4 / 131.5;
# r = 10 did no better than 5 on the 11-frame gap. The pretrained decoder (visible condition, guidance 3) gained too.
# It costs about 2x the wall time of r = 1 (the model calls grow r-fold; the encoder's condition does not).
RESAMPLE = 5


def default_resample(method: str) -> int:
    """RePaint resampling when none is given: :data:`RESAMPLE` for every diffusion model, 1 for the mae baseline
    (a one-pass regression, no diffusion steps to repeat)."""
    return 1 if method == "mae" else RESAMPLE


def default_guidance(condition: str) -> float:
    """Reconstruction-guidance weight when none is given: :data:`RECON_GUIDANCE` for the ``visible`` protocol, 0
    (RePaint's replacement alone, the paper's) for every other condition."""
    return RECON_GUIDANCE if condition == "visible" else 0.0


def check_init(init: str, init_strength: float, method: Optional[str] = None, where: str = "") -> None:
    """Raise :class:`ConfigError` for an ``init`` / ``init_strength`` pair that cannot run (see :data:`INITS`);
    ``method`` (when known) must have a chain to start; ``where`` prefixes the field names (e.g. a config's)."""
    if init not in INITS:
        raise ConfigError(f"{where}init (--init): {init!r} is not one of {list(INITS)}")
    if not 0.0 < init_strength <= 1.0:
        raise ConfigError(f"{where}init_strength (--init-strength): expected 0 < s <= 1 (1 = from noise), got "
                          f"{init_strength}")
    if init != "noise" and method == "mae":
        raise ConfigError("init (--init): the mae baseline regresses in one pass; it has no chain to start")


def visible_token_mask(known: torch.Tensor, patch_len: int) -> torch.Tensor:
    """known (N, T, V, C) bool -> (N, L) bool, True where a token's patch_len frames x C coordinates are all known.

    Token order is the encoder's: L = Tp * V, time-major patches then joints."""
    n, t, v, c = known.shape
    if t % patch_len:
        raise ValueError(f"known: T={t} is not a multiple of patch_len={patch_len}")
    tok = known.reshape(n, t // patch_len, patch_len, v, c).all(dim=2).all(dim=-1)  # (N, Tp, V)
    return tok.flatten(1)  # (N, L)


def visible_condition(model: Any, x: torch.Tensor, visible: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode only the visible tokens; the pretraining condition with "masked = occluded".

    x: (n, T, V, C) normalised; visible: (n, L) bool with the SAME count K >= 1 per row.
    Returns the compact condition ``(rows (n, K+1, D), index (n, L))`` for ``model.denoise(x_t, t, rows, index)``.
    """
    return model.encode_visible(x, visible).compact()  # (n, K+1, D), (n, L)


def draw_visible_subset(visible: torch.Tensor, k: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """A uniform random subset of min(k, count) of each row's visible tokens: (n, L) bool -> (n, L) bool.

    ``generator`` must live on ``visible``'s device. Rows with at most k visible tokens come back unchanged."""
    r = torch.rand(visible.shape, generator=generator, device=visible.device)  # (n, L)
    r = torch.where(visible, r, torch.full_like(r, 2.0))  # occluded tokens rank last
    rank = torch.argsort(torch.argsort(r, dim=1), dim=1)  # (n, L) rank of each token in its row
    return visible & (rank < k)  # (n, L)



def _condition_groups(model: Any, x_in: torch.Tensor, known: torch.Tensor, condition: str,
                      generator: Optional[torch.Generator]) -> list[tuple[torch.Tensor, Callable[[], tuple], bool]]:
    """``[(rows idx (n,), cond_fn, draws)]`` covering every row once: ``cond_fn()`` gives the compact condition
    ``(rows (n, S, D), index (n, L))`` or ``(None, None)`` (dropped), a fresh draw at each call where ``draws``."""

    def fixed(rows: Optional[torch.Tensor], index: Optional[torch.Tensor]) -> Callable[[], tuple]:
        return lambda: (rows, index)

    every = torch.arange(x_in.shape[0], device=x_in.device)
    if condition == "none":
        return [(every, fixed(None, None), False)]
    if condition == "zeroed":
        from macdiff_ray.augment.core import unmasked_condition

        z = unmasked_condition(model, x_in)  # (N, L, D) all tokens of the zeroed input
        return [(every, fixed(z, None), False)]
    as_global = condition.startswith("global")

    def shape(rows: torch.Tensor, index: torch.Tensor) -> tuple:
        # compact rows are [z_local | z_global]: the global condition keeps the last row for every token
        return (rows[:, -1:], torch.zeros_like(index)) if as_global else (rows, index)

    vis = visible_token_mask(known, model.cfg.patch_len)  # (N, L)
    counts = vis.sum(1)  # (N,)
    k_model = model.cfg.num_visible  # the K of pretraining
    keep = counts.clamp(max=k_model) if condition in ("visible", "global") else counts  # (N,) tokens encoded
    groups = []
    for k in torch.unique(keep).tolist():  # the encoder needs one K per batch: group rows by K
        idx = torch.nonzero(keep == k).flatten()  # (n,)
        x_g, vis_g = x_in[idx], vis[idx]  # (n, T, V, C), (n, L)
        if k == 0:
            groups.append((idx, fixed(None, None), False))  # nothing observed at token level: z dropped
        elif bool((counts[idx] == k).all()):
            groups.append((idx, fixed(*shape(*visible_condition(model, x_g, vis_g))), False))  # all fit in K
        else:
            def draw(x_g: torch.Tensor = x_g, vis_g: torch.Tensor = vis_g, k: int = k) -> tuple:
                with torch.no_grad():  # inpaint's guidance enables grad; the encoder needs none
                    return shape(*visible_condition(model, x_g, draw_visible_subset(vis_g, k, generator)))

            groups.append((idx, draw, True))
    return groups


@torch.no_grad()
def reconstruct_batch(
    model: Any,
    schedule: Any,
    x: torch.Tensor,
    known: torch.Tensor,
    *,
    condition: str = "visible",
    steps: int = 50,
    resample: int = 1,
    eta: float = 1.0,
    generator: Optional[torch.Generator] = None,
    clip_x0: Optional[float] = CLIP_X0,
    recon_guidance: float = 0.0,
    init: str = "noise",
    init_strength: float = 1.0,
) -> torch.Tensor:
    """Recover the unknown entries of single-person sequences.

    Args:
        model: a MacDiff (eval mode) of any method that can reconstruct (not mamp); schedule: its diffusion
            schedule (unused by mae).
        x: (N, T, V, C) normalised; values under ``known == False`` are never read by the decoder path (they only
            enter the encoder through fully known tokens, and are zeroed for ``zeroed``).
        known: (N, T, V, C) bool, True = observed.
        condition: one of :data:`CONDITIONS` but ``auto`` (module docstring); it must fit the model's method.
            ``global`` and ``visible`` draw a fresh subset of the observed tokens at every model call from
            ``generator``.
        recon_guidance: reconstruction-guidance weight of :func:`macdiff_ray.diffusion.inpaint` (0 = off).
        init, init_strength: where the chain starts (:data:`INITS`); ``interpolation`` needs a known frame of every
            joint and coordinate of every row.
    Returns:
        (N, T, V, C); equal to ``x`` exactly where ``known``.
    """
    from macdiff_ray.diffusion import inpaint

    method = model.cfg.method
    if condition == "auto" or resolve_condition(condition, method, None) != condition:
        raise ValueError(f"condition: {condition!r} does not fit method {method!r}")
    if known.shape != x.shape or known.dtype != torch.bool:
        raise ValueError(f"known: expected bool of shape {tuple(x.shape)}, got {known.dtype} {tuple(known.shape)}")
    check_init(init, init_strength, method)
    x_in = torch.where(known, x, torch.zeros_like(x))  # (N, T, V, C) occluded values never reach the model
    x_init = None
    if init == "interpolation":
        from macdiff_ray.generate.occlusion import linear_interpolation_fill

        if not bool(known.any(dim=1).all()):
            raise ValueError("init 'interpolation': some joint has no known frame in a row (a body-part occlusion); "
                             "start those from noise")
        x_init = linear_interpolation_fill(x_in, known)  # (N, T, V, C) same dtype and device
    out = torch.empty_like(x)  # (N, T, V, C)
    for idx, cond_fn, varies in _condition_groups(model, x_in, known, condition, generator):
        if not model.cfg.is_diffusion:  # mae: one regression pass per draw of the condition
            draws = MAE_DRAWS if varies else 1
            shape = (len(idx),) + tuple(x.shape[1:])
            out[idx] = sum(model.regress(*cond_fn(), shape) for _ in range(draws)) / draws  # (n, T, V, C)
            continue

        def model_fn(x_t: torch.Tensor, t: torch.Tensor, cond_fn: Callable[[], tuple] = cond_fn) -> torch.Tensor:
            rows, index = cond_fn()
            return model.denoise(x_t, t, rows, index)  # (n, T, V, C)

        out[idx] = inpaint(schedule, model_fn, x_in[idx], known[idx], steps=steps, resample=resample, eta=eta,
                           target=model.cfg.target, generator=generator, clip_x0=clip_x0,
                           recon_guidance=recon_guidance, init_strength=init_strength,
                           x_init=None if x_init is None else x_init[idx])  # (n, T, V, C)
    return torch.where(known, x, out)  # (N, T, V, C) known entries exactly the input
