"""MacDiff: masked semantic encoder + AdaLN-conditioned diffusion decoder (ECCV 2024).

Pretraining step (``forward_loss``), all tensors (N, T, V, C) unless said:
1. encode a random K of the L tokens of the encoder view ``x_view`` -> z_local (N, K, D);
2. condition z (N, L, D): z_local put back at its positions, every masked position filled with
   z_global = mean of z_local (no CLS token); with probability ``cond_drop_prob`` per sample z is replaced by 0;
3. diffuse the CLEAN sequence to a uniform t and let the decoder predict eps (or x0) from (x_t, t, z);
4. loss = MSE (masked tokens only by default, or all) + ``uniformity_weight`` x token uniformity of z_local.

The baselines (``ModelConfig.method``, paper Tables 1-6) are branches of the same step, not copies of the model:

* ``ddim`` / ``mdm``: no encoder (``model.encoder is None``); steps 3-4 with z = None and the loss over all
  tokens, eps (ddim) or x0 (mdm) as the target.
* ``mae`` / ``mamp``: steps 1-2 (no condition dropout), then the decoder reads a blank input (x = 0 at t = 0), so
  the condition is its only source: it regresses the coordinates (mae) or the motion ``x[t] - x[t-1]`` (mamp,
  :func:`masking.frame_differences`) of the clean sequence, masked tokens only by default. No diffusion.

Speed note: z has only K + 1 distinct rows per sample (the visible tokens and the shared global mean), so the
decoder's z-modulation is computed on those rows and gathered (:class:`Condition.compact`), 10x less work than on
all L = 750 tokens at r = 0.9, with identical results (tested against the dense form).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from macdiff_ray.diffusion.gaussian import training_loss, weighted_mse
from macdiff_ray.diffusion.schedules import Schedule
from macdiff_ray.model.config import ModelConfig
from macdiff_ray.model.decoder import DiffusionDecoder
from macdiff_ray.model.encoder import SkeletonEncoder, check_input, mask_from_ids
from macdiff_ray.model.layers import token_mask_to_elements
from macdiff_ray.model.masking import frame_differences


@dataclass
class Condition:
    """The encoder's output for one batch: z_local (N, K, D), ids_keep (N, K), ids_restore (N, L)."""

    z_local: torch.Tensor
    ids_keep: torch.Tensor
    ids_restore: torch.Tensor

    @property
    def num_keep(self) -> int:
        return int(self.z_local.shape[1])

    @property
    def mask(self) -> torch.Tensor:
        """(N, L) bool, True where the token was masked."""
        return mask_from_ids(self.ids_restore, self.num_keep)

    def compact(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(z rows (N, K+1, D) = [z_local | z_global], z_index (N, L) naming each token's row)."""
        z_global = self.z_local.mean(dim=1, keepdim=True)  # (N, 1, D)
        rows = torch.cat([self.z_local, z_global], dim=1)  # (N, K+1, D)
        return rows, self.ids_restore.clamp(max=self.num_keep)  # (N, K+1, D), (N, L)

    def dense(self) -> torch.Tensor:
        """Unshuffled condition z (N, L, D): visible positions z_local, masked positions z_global."""
        rows, index = self.compact()  # (N, K+1, D), (N, L)
        return torch.gather(rows, 1, index[:, :, None].expand(-1, -1, rows.shape[-1]))  # (N, L, D)


def token_uniformity(z: torch.Tensor) -> torch.Tensor:
    """Mean squared cosine similarity between the tokens of each sample, (N, K, D) -> () (released code: the mean
    runs over all K x K pairs, self-pairs included, which only adds the constant 1/K)."""
    u = F.normalize(z, dim=-1)  # (N, K, D)
    return torch.bmm(u, u.transpose(1, 2)).pow(2).mean()  # ()


class MacDiff(nn.Module):
    """The pretraining model. ``forward`` is ``forward_loss`` (so DDP's gradient hooks see the call)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        # ddim / mdm are the decoder alone: no encoder module, so no encoder parameter at all
        self.encoder = SkeletonEncoder(cfg) if cfg.has_encoder else None
        self.decoder = DiffusionDecoder(cfg)

    def initialize_weights(self) -> None:
        """Re-initialise every weight (both parts use :func:`macdiff_ray.model.layers.initialize_weights`)."""
        if self.encoder is not None:
            self.encoder.initialize_weights()
        self.decoder.initialize_weights()

    def _need_encoder(self) -> None:
        if self.encoder is None:
            raise ValueError(f"method {self.cfg.method!r} has no encoder (a decoder-only diffusion model)")

    def encode(self, x_view: torch.Tensor, generator: Optional[torch.Generator] = None) -> Condition:
        """Masked encoding of x_view (N, T, V, C) -> :class:`Condition`."""
        self._need_encoder()
        z_local, ids_keep, ids_restore = self.encoder.forward_masked(x_view, generator)  # (N,K,D) (N,K) (N,L)
        return Condition(z_local, ids_keep, ids_restore)

    def encode_visible(self, x: torch.Tensor, visible: torch.Tensor) -> Condition:
        """Encoding of chosen tokens instead of a random mask: x (N, T, V, C), visible (N, L) bool with the same
        count K >= 1 per row; every other token is a masked position of the :class:`Condition`."""
        self._need_encoder()
        return Condition(*self.encoder.forward_visible(x, visible))

    def condition(
        self, x_view: torch.Tensor, generator: Optional[torch.Generator] = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(z (N, L, D) unshuffled with masked positions = global mean, mask (N, L) bool True = masked)."""
        c = self.encode(x_view, generator)
        return c.dense(), c.mask

    def denoise(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        z: Optional[torch.Tensor] = None,
        z_index: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Decoder prediction (N, T, V, C) from x_t (N, T, V, C), t (N,) and z (dense (N, L, D), compact with
        z_index, or None = dropped condition)."""
        return self.decoder(x_t, t, z, z_index)

    def regress(self, rows: Optional[torch.Tensor], index: Optional[torch.Tensor], shape: tuple) -> torch.Tensor:
        """mae / mamp prediction from a condition (dense, or compact with ``index``; None = dropped): the decoder on a
        blank input at t = 0; (N, T, V, C) coordinates (mae) or motion (mamp), in normalised units."""
        ref = rows if rows is not None else self.decoder.pred.weight
        blank = torch.zeros(shape, device=ref.device, dtype=ref.dtype)  # (N, T, V, C)
        t0 = torch.zeros(shape[0], dtype=torch.int64, device=ref.device)  # (N,)
        return self.decoder(blank, t0, rows, index)  # (N, T, V, C)

    def forward_loss(
        self,
        x_clean: torch.Tensor,
        x_view: torch.Tensor,
        schedule: Schedule,
        t: Optional[torch.Tensor] = None,
        noise: Optional[torch.Tensor] = None,
        generator: Optional[torch.Generator] = None,
    ) -> dict:
        """One pretraining loss. x_clean, x_view: (N, T, V, C); t: (N,) int64 (uniform if None); noise like x_clean.

        Returns ``{"loss": (), "mse": (), "uniformity": ()}``; loss = mse + uniformity_weight * uniformity.
        Condition dropout and random draws use ``generator`` when given (masking, dropout, t, noise, in that order).
        """
        cfg = self.cfg
        check_input(x_clean, cfg, "x_clean")
        check_input(x_view, cfg, "x_view")
        n, dev = x_clean.shape[0], x_clean.device
        if not cfg.has_encoder:  # ddim / mdm: unconditional diffusion, every token in the loss
            if t is None:
                t = torch.randint(0, schedule.num_steps, (n,), device=dev, generator=generator)  # (N,)
            if noise is None:
                noise = torch.randn(x_clean.shape, device=dev, dtype=x_clean.dtype, generator=generator)
            out = training_loss(schedule, lambda x_t, tt: self.decoder(x_t, tt, None), x_clean, t, noise,
                                cfg.target, None)
            zero = out["loss"].new_zeros(())
            return {"loss": out["loss"], "mse": out["loss"], "uniformity": zero}
        cond = self.encode(x_view, generator)
        if not cfg.is_diffusion:  # mae / mamp: regress the target of the clean sequence from the condition alone
            rows, index = cond.compact()  # (N, K+1, D), (N, L)
            pred = self.regress(rows, index, tuple(x_clean.shape))  # (N, T, V, C)
            goal = x_clean if cfg.target == "x0" else frame_differences(x_clean)  # (N, T, V, C)
            weight = (token_mask_to_elements(cond.mask, cfg.num_patches, cfg.num_joints, cfg.patch_len)
                      if cfg.loss_on == "masked" else None)  # (N, T, V, 1)
            mse = weighted_mse(pred, goal, weight).mean()
            uni = token_uniformity(cond.z_local)  # ()
            return {"loss": mse + cfg.uniformity_weight * uni, "mse": mse, "uniformity": uni}
        rows, index = cond.compact()  # (N, K+1, D), (N, L)
        if self.training and cfg.cond_drop_prob > 0:
            keep = torch.rand(n, device=dev, generator=generator) >= cfg.cond_drop_prob  # (N,)
            rows = rows * keep[:, None, None].to(rows.dtype)  # (N, K+1, D): dropped samples get z = 0
        if t is None:
            t = torch.randint(0, schedule.num_steps, (n,), device=dev, generator=generator)  # (N,)
        if noise is None:
            noise = torch.randn(x_clean.shape, device=dev, dtype=x_clean.dtype, generator=generator)  # (N,T,V,C)
        weight = None
        if cfg.loss_on == "masked":
            weight = token_mask_to_elements(cond.mask, cfg.num_patches, cfg.num_joints, cfg.patch_len)  # (N,T,V,1)

        def model_fn(x_t: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:
            return self.decoder(x_t, tt, rows, index)  # (N, T, V, C)

        out = training_loss(schedule, model_fn, x_clean, t, noise, cfg.target, weight)
        uni = token_uniformity(cond.z_local)  # ()
        loss = out["loss"] + cfg.uniformity_weight * uni
        return {"loss": loss, "mse": out["loss"], "uniformity": uni}

    def forward(self, *args, **kwargs) -> dict:
        return self.forward_loss(*args, **kwargs)


def encoder_state_dict(model: MacDiff) -> dict[str, torch.Tensor]:
    """The encoder's own state dict (keys without the ``encoder.`` prefix), for ``SkeletonEncoder.from_state_dict(
    cfg, sd, prefix="")``. A full MacDiff state dict also loads directly with the default prefix."""
    model._need_encoder()
    return {k: v.detach().clone() for k, v in model.encoder.state_dict().items()}


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
