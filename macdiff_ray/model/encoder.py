"""The semantic encoder: patch embedding, factorised positions, masking, pre-LN Transformer, final LN.

The masking strategy is ``ModelConfig.masking`` (:mod:`macdiff_ray.model.masking`; random by default).

Mask convention (MAE): ``ids_shuffle = argsort(noise)``; the first K of the shuffle are KEPT (visible);
``ids_restore = argsort(ids_shuffle)`` puts a shuffled sequence back in token order; ``mask`` is True where a
token is MASKED (hidden from the encoder).
"""

from __future__ import annotations

from typing import Mapping, Optional

import torch
from torch import nn

from macdiff_ray.model.config import ModelConfig
from macdiff_ray.model.layers import Block, FactorisedPosEmbed, PatchEmbed, initialize_weights
from macdiff_ray.model.masking import mask_tokens, random_masking

__all__ = ["SkeletonEncoder", "check_input", "mask_from_ids", "random_masking"]


def check_input(x: torch.Tensor, cfg: ModelConfig, name: str = "x") -> None:
    """Raise a ValueError unless x is (N, T, V, C) with T, V, C of the config."""
    want = (cfg.num_frames, cfg.num_joints, cfg.channels)
    if x.dim() != 4 or tuple(x.shape[1:]) != want:
        raise ValueError(
            f"{name}: expected shape (N, {want[0]}, {want[1]}, {want[2]}) = (N, T, V, C) from ModelConfig, "
            f"got {tuple(x.shape)}"
        )


def mask_from_ids(ids_restore: torch.Tensor, num_keep: int) -> torch.Tensor:
    """Bool mask (N, L), True where the token is masked (its rank in the shuffle is >= K)."""
    return ids_restore >= num_keep  # (N, L)


class SkeletonEncoder(nn.Module):
    """Transformer encoder over joint-patch tokens; the MacDiff semantic encoder and the downstream backbone.

    Input x: (N, T, V, C). Width D = cfg.width.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.width
        self.patch_embed = PatchEmbed(cfg.patch_len, cfg.channels, d)
        self.pos_embed = FactorisedPosEmbed(cfg.num_patches, cfg.num_joints, d)
        rates = torch.linspace(0, cfg.drop_path, cfg.enc_depth).tolist()  # stochastic depth, linear in depth
        self.blocks = nn.ModuleList(Block(d, cfg.enc_heads, cfg.mlp_ratio, r) for r in rates)
        self.norm = nn.LayerNorm(d)
        self.initialize_weights()
        if cfg.use_compile:
            for blk in self.blocks:
                blk.compile()

    def initialize_weights(self) -> None:
        initialize_weights(self)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, V, C) -> tokens with positions added (before any masking), (N, L, D), L = Tp * V."""
        check_input(x, self.cfg)
        tok = self.pos_embed(self.patch_embed(x))  # (N, Tp, V, D)
        return tok.flatten(1, 2)  # (N, L, D)

    def _run(self, h: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            h = blk(h)  # (N, *, D)
        return self.norm(h)  # (N, *, D)

    def forward_masked(
        self, x: torch.Tensor, generator: Optional[torch.Generator] = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode a K-token subset per sample, drawn by the config's masking strategy (K = ``cfg.num_visible``).

        x: (N, T, V, C). Returns z_local (N, K, D) (the visible tokens' outputs, in shuffle order),
        ids_keep (N, K) and ids_restore (N, L) (int64; see the module docstring for the convention).
        """
        tok = self.embed(x)  # (N, L, D)
        d = tok.shape[-1]
        cfg = self.cfg
        ids_keep, ids_restore = mask_tokens(cfg.masking, x, patch_len=cfg.patch_len, num_joints=cfg.num_joints,
                                            ratio=cfg.mask_ratio, temperature=cfg.motion_temperature,
                                            generator=generator)  # (N, K), (N, L)
        vis = torch.gather(tok, 1, ids_keep[:, :, None].expand(-1, -1, d))  # (N, K, D)
        return self._run(vis), ids_keep, ids_restore  # (N, K, D), (N, K), (N, L)

    def forward_visible(
        self, x: torch.Tensor, visible: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode the given tokens: ``visible`` (N, L) bool with the SAME count K >= 1 per row.

        Returns ``(z_local (N, K, D), ids_keep (N, K), ids_restore (N, L))`` as :meth:`forward_masked`, the kept
        tokens in ascending token order (a stable sort; the blocks are permutation-equivariant anyway).
        """
        counts = visible.sum(1)  # (N,)
        k = int(counts[0])
        if k < 1 or bool((counts != k).any()):
            raise ValueError(f"visible: every row needs the same number K >= 1 of visible tokens, got "
                             f"{counts.tolist()}")
        tok = self.embed(x)  # (N, L, D)
        ids_shuffle = torch.argsort((~visible).to(torch.int8), dim=1, stable=True)  # (N, L) visible first
        ids_keep, ids_restore = ids_shuffle[:, :k], torch.argsort(ids_shuffle, dim=1)  # (N, K), (N, L)
        vis = torch.gather(tok, 1, ids_keep[:, :, None].expand(-1, -1, tok.shape[-1]))  # (N, K, D)
        return self._run(vis), ids_keep, ids_restore  # (N, K, D), (N, K), (N, L)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """All tokens, no masking (downstream use): (N, T, V, C) -> (N, Tp, V, D)."""
        h = self._run(self.embed(x))  # (N, L, D)
        return h.reshape(x.shape[0], self.cfg.num_patches, self.cfg.num_joints, -1)  # (N, Tp, V, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)  # (N, Tp, V, D)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Mean over time and joints: (N, T, V, C) -> (N, D)."""
        return self.forward_features(x).mean(dim=(1, 2))  # (N, D)

    def per_joint(self, x: torch.Tensor) -> torch.Tensor:
        """Mean over time per joint: (N, T, V, C) -> (N, V, D)."""
        return self.forward_features(x).mean(dim=1)  # (N, V, D)

    @classmethod
    def from_state_dict(
        cls, cfg: ModelConfig, state_dict: Mapping[str, torch.Tensor], prefix: str = "encoder."
    ) -> "SkeletonEncoder":
        """Build an encoder from a MacDiff state dict (keys under ``prefix``; ``prefix=""`` for an encoder-only
        dict). Strict: a missing, unexpected or wrongly shaped key raises ValueError naming the keys."""
        enc = cls(cfg)
        enc.load_encoder_state(state_dict, prefix=prefix)
        return enc

    def load_encoder_state(self, state_dict: Mapping[str, torch.Tensor], prefix: str = "encoder.") -> None:
        """Strictly load the keys under ``prefix`` of ``state_dict`` into this encoder (see from_state_dict)."""
        sub = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
        if not sub:
            some = sorted(state_dict)[:5]
            raise ValueError(f"state dict has no key starting with {prefix!r} (first keys: {some})")
        own = self.state_dict()
        missing = sorted(set(own) - set(sub))
        unexpected = sorted(set(sub) - set(own))
        wrong = sorted(k for k in set(own) & set(sub) if tuple(own[k].shape) != tuple(sub[k].shape))
        if missing or unexpected or wrong:
            detail = "; ".join(
                f"{what}: {keys[:8]}{' ...' if len(keys) > 8 else ''}"
                for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong))
                if keys
            )
            shapes = ", ".join(f"{k}: {tuple(sub[k].shape)} vs model {tuple(own[k].shape)}" for k in wrong[:3])
            raise ValueError(
                f"encoder weights do not fit ModelConfig(width={self.cfg.width}, enc_depth={self.cfg.enc_depth}, "
                f"num_joints={self.cfg.num_joints}, num_frames={self.cfg.num_frames}, patch_len="
                f"{self.cfg.patch_len}): {detail}" + (f" ({shapes})" if shapes else "")
            )
        self.load_state_dict(sub, strict=True)
