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

    A model without an encoder (``cfg.has_encoder`` False: ddim, mdm) gets an unconditional decoder (no z
    modulation weights; z must be None). ``cfg.dec_tokens == "frame"`` makes one token per temporal patch holding
    all V joints (MDM-orig's temporal-only attention): the sequence is read as one "joint" of V x C channels.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.dec_width
        self.frame_tokens = cfg.dec_tokens == "frame"
        joints, channels = (1, cfg.num_joints * cfg.channels) if self.frame_tokens else (cfg.num_joints, cfg.channels)
        self.num_tokens = cfg.num_patches * joints
        self.patch_embed = PatchEmbed(cfg.patch_len, channels, d)
        self.pos_embed = FactorisedPosEmbed(cfg.num_patches, joints, d)
        self.time_embed = TimestepEmbedder(cfg.time_embed_dim)
        cond_dim = cfg.width if cfg.has_encoder else None
        self.blocks = nn.ModuleList(
            DecoderBlock(d, cfg.dec_heads, cfg.mlp_ratio, cond_dim, cfg.time_embed_dim) for _ in range(cfg.dec_depth)
        )
        self.norm = nn.LayerNorm(d)
        self.pred = nn.Linear(d, cfg.patch_len * channels)
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
        n, l = x_t.shape[0], self.num_tokens
        if t.shape != (n,):
            raise ValueError(f"t: expected shape ({n},), got {tuple(t.shape)}")
        if z is not None:
            if not self.cfg.has_encoder:
                raise ValueError(f"z: method {self.cfg.method!r} has an unconditional decoder; pass z=None")
            if z.dim() != 3 or z.shape[0] != n or z.shape[2] != self.cfg.width:
                raise ValueError(f"z: expected (N={n}, L or S, D={self.cfg.width}), got {tuple(z.shape)}")
            if z_index is None and z.shape[1] != l:
                raise ValueError(f"z: dense condition needs L={l} tokens, got {z.shape[1]} (or pass z_index)")
            if z_index is not None and z_index.shape != (n, l):
                raise ValueError(f"z_index: expected shape ({n}, {l}), got {tuple(z_index.shape)}")
        cfg = self.cfg
        x_in = x_t.reshape(n, cfg.num_frames, 1, -1) if self.frame_tokens else x_t  # (N, T, V, C) or (N, T, 1, VC)
        h = self.pos_embed(self.patch_embed(x_in)).flatten(1, 2)  # (N, L, D')
        temb = F.silu(self.time_embed(t))  # (N, Dt)
        for blk in self.blocks:
            h = blk(h, temb, z, z_index)  # (N, L, D')
        p = self.pred(self.norm(h))  # (N, L, l*C) (frame tokens: (N, Tp, l*V*C))
        p = p.reshape(n, cfg.num_patches, x_in.shape[2], -1)  # (N, Tp, V, l*C) or (N, Tp, 1, l*V*C)
        return unpatchify(p, cfg.patch_len).reshape(x_t.shape)  # (N, T, V, C)
