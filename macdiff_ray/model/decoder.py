"""The denoising decoder: AdaLN-conditioned Transformer over all tokens of the noisy sequence x_t.

It never imports the diffusion code: it maps (x_t, t, z) to a prediction (eps or x0, decided by the caller).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from macdiff_ray.model.config import ModelConfig
from macdiff_ray.model.encoder import check_input
from macdiff_ray.model.layers import (
    DecoderBlock,
    FactorisedPosEmbed,
    PatchEmbed,
    TimestepEmbedder,
    initialize_weights,
    unpatchify,
)


class DiffusionDecoder(nn.Module):
    """(x_t (N, T, V, C), t (N,), z) -> prediction (N, T, V, C). Width D' = cfg.dec_width, condition width cfg.width.

    The decoder has its own patch embedding and positional embeddings (paper Sec. 3.3). The condition z is
    ``None`` (dropped: equivalent to z = 0), dense (N, L, D), or compact (N, S, D) with ``z_index`` (N, L).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.dec_width
        self.patch_embed = PatchEmbed(cfg.patch_len, cfg.channels, d)
        self.pos_embed = FactorisedPosEmbed(cfg.num_patches, cfg.num_joints, d)
        self.time_embed = TimestepEmbedder(cfg.time_embed_dim)
        self.blocks = nn.ModuleList(
            DecoderBlock(d, cfg.dec_heads, cfg.mlp_ratio, cfg.width, cfg.time_embed_dim) for _ in range(cfg.dec_depth)
        )
        self.norm = nn.LayerNorm(d)
        self.pred = nn.Linear(d, cfg.patch_dim)
        self.initialize_weights()
        if cfg.use_compile:
            for blk in self.blocks:
                blk.compile()

    def initialize_weights(self) -> None:
        initialize_weights(self)

    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        z: Optional[torch.Tensor] = None,
        z_index: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        check_input(x_t, self.cfg, "x_t")
        n, l = x_t.shape[0], self.cfg.num_tokens
        if t.shape != (n,):
            raise ValueError(f"t: expected shape ({n},), got {tuple(t.shape)}")
        if z is not None:
            if z.dim() != 3 or z.shape[0] != n or z.shape[2] != self.cfg.width:
                raise ValueError(f"z: expected (N={n}, L or S, D={self.cfg.width}), got {tuple(z.shape)}")
            if z_index is None and z.shape[1] != l:
                raise ValueError(f"z: dense condition needs L={l} tokens, got {z.shape[1]} (or pass z_index)")
            if z_index is not None and z_index.shape != (n, l):
                raise ValueError(f"z_index: expected shape ({n}, {l}), got {tuple(z_index.shape)}")
        h = self.pos_embed(self.patch_embed(x_t)).flatten(1, 2)  # (N, L, D')
        temb = F.silu(self.time_embed(t))  # (N, Dt)
        for blk in self.blocks:
            h = blk(h, temb, z, z_index)  # (N, L, D')
        p = self.pred(self.norm(h))  # (N, L, l*C)
        p = p.reshape(n, self.cfg.num_patches, self.cfg.num_joints, self.cfg.patch_dim)  # (N, Tp, V, l*C)
        return unpatchify(p, self.cfg.patch_len)  # (N, T, V, C)
