"""Small named building blocks shared by the encoder and the decoder.

Token layout: a sequence (N, T, V, C) becomes Tp * V tokens, token index ``l = tp * V + v`` (time-major), each
holding the ``patch_len x C`` values of joint v in frames ``tp*patch_len .. tp*patch_len + patch_len - 1``.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

# Standard deviation of the AdaLN modulation weights: small, so that each scale (1 + linear) starts near 1 and each
# shift near 0 (z ~ unit variance after the encoder's final LN: 0.02 * sqrt(256) = 0.32 spread around 1).
MOD_INIT_STD = 0.02
POS_INIT_STD = 0.02


def patchify(x: torch.Tensor, patch_len: int) -> torch.Tensor:
    """(N, T, V, C) -> (N, Tp, V, patch_len * C), values of one joint in one temporal patch, frame-major."""
    n, t, v, c = x.shape
    x = x.reshape(n, t // patch_len, patch_len, v, c)  # (N, Tp, l, V, C)
    return x.permute(0, 1, 3, 2, 4).reshape(n, t // patch_len, v, patch_len * c)  # (N, Tp, V, l*C)


def unpatchify(p: torch.Tensor, patch_len: int) -> torch.Tensor:
    """(N, Tp, V, patch_len * C) -> (N, T, V, C); the inverse of :func:`patchify`."""
    n, tp, v, pc = p.shape
    p = p.reshape(n, tp, v, patch_len, pc // patch_len)  # (N, Tp, V, l, C)
    return p.permute(0, 1, 3, 2, 4).reshape(n, tp * patch_len, v, pc // patch_len)  # (N, T, V, C)


def token_mask_to_elements(mask: torch.Tensor, num_patches: int, num_joints: int, patch_len: int) -> torch.Tensor:
    """Token mask (N, L) -> per-element mask (N, T, V, 1) (each token covers patch_len frames of one joint)."""
    n = mask.shape[0]
    m = mask.reshape(n, num_patches, num_joints)  # (N, Tp, V)
    return m.repeat_interleave(patch_len, dim=1).unsqueeze(-1)  # (N, T, V, 1)


class PatchEmbed(nn.Module):
    """Linear map of the patch_len x C values of one joint in one temporal patch to a width-D token.

    (Equal to the released code's (patch_len, 1)-kernel convolution over time.) (N, T, V, C) -> (N, Tp, V, D).
    """

    def __init__(self, patch_len: int, channels: int, dim: int):
        super().__init__()
        self.patch_len = patch_len
        self.proj = nn.Linear(patch_len * channels, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = patchify(x.to(self.proj.weight.dtype), self.patch_len)  # (N, Tp, V, l*C)
        return self.proj(p)  # (N, Tp, V, D)


class FactorisedPosEmbed(nn.Module):
    """Learnable temporal (Tp, D) + joint (V, D) positional embeddings, added to (N, Tp, V, D) tokens."""

    def __init__(self, num_patches: int, num_joints: int, dim: int):
        super().__init__()
        self.temporal = nn.Parameter(torch.zeros(num_patches, dim))  # (Tp, D)
        self.joint = nn.Parameter(torch.zeros(num_joints, dim))  # (V, D)

    def forward(self, tok: torch.Tensor) -> torch.Tensor:
        return tok + self.temporal[:, None, :] + self.joint[None, :, :]  # (N, Tp, V, D)


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample with probability p (training only)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        m = x.new_empty(shape).bernoulli_(keep)  # (N, 1, ...)
        return x * m / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Mlp(nn.Module):
    """Linear -> GELU -> Linear, (..., D) -> (..., D)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))  # (..., D)


# How attention runs under bf16 autocast on the CPU (measured in the README, issue 16):
# - "sliced" (default): one (sample, head) slice at a time, so that its L x L scores stay in the L2 cache. The
#   scores and the softmax are computed in float32 from upcast q and k; the probabilities are rounded once to bf16,
#   and the other matmuls (P V; dP = dO V^T, dQ, dK, dV in the backward) run at the bf16 rate. Its error is about
#   that of torch's bf16 kernel (0.7-1.2x, output and gradients; tests/test_model.py). The CPU flash kernel, in
#   either dtype, reaches only a fraction of the bf16 matmul rate: with it in float32, the decoder's attention over
#   750 tokens was 60% of a bf16 `paper` step. The probabilities are kept for the backward: N * H * L^2 bf16
#   values, so a call that would keep more than SLICED_MAX_BYTES falls back to "fp32".
#   Below SLICED_MIN_TOKENS keys the per-slice loop costs more than it saves, and "fp32" runs instead (1 thread,
#   fwd + bwd, N x H = 64 slices of Dh 32: L = 75 0.57x, 200 1.13x, 750 1.38x the "fp32" rate).
# - "fp32": torch's fused kernel in float32, the output rounded once to bf16.
# - "bf16": torch's own choice under autocast (its bf16 flash kernel), for benchmarks
#   (`benchmarks/model_step.py --cpu-bf16-attention MODE`).
CPU_BF16_ATTENTION_CHOICES = ("sliced", "fp32", "bf16")
_cpu_bf16_attention = "sliced"
SLICED_MAX_BYTES = 1 << 30
SLICED_MIN_TOKENS = 256


def set_cpu_bf16_attention(mode: str) -> str:
    """Set how attention runs under CPU bf16 autocast (one of :data:`CPU_BF16_ATTENTION_CHOICES`); returns the
    previous setting."""
    global _cpu_bf16_attention
    if mode not in CPU_BF16_ATTENTION_CHOICES:
        raise ValueError(f"cpu bf16 attention: {mode!r} is not one of {list(CPU_BF16_ATTENTION_CHOICES)}")
    previous, _cpu_bf16_attention = _cpu_bf16_attention, mode
    return previous


def _sliced_forward(q3: torch.Tensor, k3: torch.Tensor, v3: torch.Tensor, keep: bool):
    """Attention of ``(S, L, Dh)`` bf16 slices: returns the output ``(S, L, Dh)`` and, if ``keep``, the bf16
    probabilities ``(S, L, L)``."""
    scale = q3.shape[-1] ** -0.5
    qf, kf = q3.float() * scale, k3.float()  # (S, L, Dh) each: the scores in float32
    o = torch.empty_like(q3)
    probs = torch.empty(q3.shape[0], q3.shape[1], k3.shape[1], dtype=q3.dtype) if keep else None
    for i in range(q3.shape[0]):
        p = torch.softmax(torch.mm(qf[i], kf[i].t()), dim=-1)  # (L, L) float32
        if keep:
            p = probs[i].copy_(p)  # rounded once to bf16
        else:
            p = p.to(q3.dtype)
        torch.mm(p, v3[i], out=o[i])
    return o, probs


class _SlicedAttention(torch.autograd.Function):
    """``"sliced"`` attention with its backward (see :data:`CPU_BF16_ATTENTION_CHOICES`); ``(S, L, Dh)`` bf16."""

    @staticmethod
    def forward(ctx, q3, k3, v3):
        with torch.autocast("cpu", enabled=False):
            o, probs = _sliced_forward(q3, k3, v3, keep=True)
        ctx.save_for_backward(q3, k3, v3, probs)
        return o

    @staticmethod
    def backward(ctx, do):
        q3, k3, v3, probs = ctx.saved_tensors
        scale = q3.shape[-1] ** -0.5
        with torch.autocast("cpu", enabled=False):
            do = do.to(q3.dtype).contiguous()
            dq, dk, dv = torch.empty_like(q3), torch.empty_like(k3), torch.empty_like(v3)
            for i in range(q3.shape[0]):
                p = probs[i]  # (L, L)
                torch.mm(p.t(), do[i], out=dv[i])
                ds = torch._softmax_backward_data(torch.mm(do[i], v3[i].t()), p, -1, p.dtype)  # dS = P * (dP - ...)
                torch.mm(ds, k3[i], out=dq[i])
                torch.mm(ds.t(), q3[i], out=dk[i])
            dq.mul_(scale)
            dk.mul_(scale)
        return dq, dk, dv


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``F.scaled_dot_product_attention`` of ``(N, H, L, Dh)`` tensors; bf16 inputs on the CPU take the path set by
    :func:`set_cpu_bf16_attention` (:data:`CPU_BF16_ATTENTION_CHOICES`). The output has the inputs' dtype."""
    mode = _cpu_bf16_attention
    if q.dtype != torch.bfloat16 or q.device.type != "cpu" or mode == "bf16":
        return F.scaled_dot_product_attention(q, k, v)
    shape = q.shape
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    if (mode == "sliced" and k.shape[-2] >= SLICED_MIN_TOKENS
            and not (grad and q[..., 0].numel() * k.shape[-2] * 2 > SLICED_MAX_BYTES)):
        q3, k3, v3 = (t.reshape(-1, *t.shape[-2:]).to(torch.bfloat16) for t in (q, k, v))  # (N*H, L, Dh)
        if grad:
            return _SlicedAttention.apply(q3, k3, v3).view(shape)
        with torch.autocast("cpu", enabled=False):
            return _sliced_forward(q3, k3, v3, keep=False)[0].view(shape)
    with torch.autocast("cpu", enabled=False):  # autocast would cast the float32 inputs back to bf16
        return F.scaled_dot_product_attention(q.float(), k.float(), v.float()).to(q.dtype)


class Attention(nn.Module):
    """Multi-head self-attention through ``F.scaled_dot_product_attention`` (fused kernels on CPU and CUDA; float32
    under bf16 autocast on the CPU, :func:`attention`)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, l, d = x.shape
        qkv = self.qkv(x).reshape(n, l, 3, self.heads, d // self.heads)  # (N, L, 3, H, Dh)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (N, H, L, Dh)
        o = attention(q, k, v)  # (N, H, L, Dh)
        return self.proj(o.transpose(1, 2).reshape(n, l, d))  # (N, L, D)


class Block(nn.Module):
    """Pre-LN Transformer block: h + Attn(LN(h)), then h + MLP(LN(h)). (N, L, D) -> (N, L, D)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h + self.drop_path(self.attn(self.norm1(h)))  # (N, L, D)
        return h + self.drop_path(self.mlp(self.norm2(h)))  # (N, L, D)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of timesteps t (N,) -> (N, dim) float32 ([cos | sin], geometric frequencies).

    Computed in float32 on purpose: t reaches 999 and bf16 would round it.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.to(torch.float32)[:, None] * freqs[None, :]  # (N, dim/2)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (N, dim)


class TimestepEmbedder(nn.Module):
    """t (N,) -> sinusoid (N, Dt) -> Linear -> SiLU -> Linear -> (N, Dt)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.fc1 = nn.Linear(dim, dim)
        self.fc2 = nn.Linear(dim, dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        e = timestep_embedding(t, self.dim).to(self.fc1.weight.dtype)  # (N, Dt)
        return self.fc2(F.silu(self.fc1(e)))  # (N, Dt)


def modulate(h: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """AdaLN (paper eq. 4) in folded form: z_s (t_s LN(h) + t_b) + z_b = LN(h) * scale + shift,
    scale = z_s t_s, shift = z_s t_b + z_b. h, scale, shift: (N, L, D)."""
    ln = F.layer_norm(h, h.shape[-1:])  # (N, L, D), no affine: the modulation supplies it
    return torch.addcmul(shift, ln, scale)  # (N, L, D)


class DecoderBlock(nn.Module):
    """Transformer block whose two LayerNorms are AdaLN (paper eq. 4).

    AdaLN(h, z, t) = z_s * (t_s * LN(h) + t_b) + z_b with the scales parametrised as 1 + linear:
    (t_s - 1, t_b) per sample from the timestep embedding, (z_s - 1, z_b) per token from z. The modulation weights
    start small (std 0.02), so every block starts near plain LN (scales ~1, shifts ~0). A dropped condition (z = 0,
    or ``z=None``) leaves z_s = 1 + bias, z_b = bias. (The released code uses z_s = linear(z) without the 1 + ...,
    which makes a dropped z zero out the block input at initialisation.)
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float, cond_dim: Optional[int], time_dim: int):
        super().__init__()
        self.dim = dim
        self.attn = Attention(dim, heads)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        # One linear each for both AdaLNs: outputs [ts1, tb1, ts2, tb2] and [zs1, zb1, zs2, zb2]. cond_dim None: an
        # unconditional decoder (no encoder: ddim, mdm), whose z-modulation is the identity (z_s = 1, z_b = 0).
        self.t_mod = nn.Linear(time_dim, 4 * dim)
        self.z_mod = nn.Linear(cond_dim, 4 * dim) if cond_dim is not None else None

    def modulation(
        self, temb: torch.Tensor, z: Optional[torch.Tensor], z_index: Optional[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Folded (scale1, shift1, scale2, shift2) of both AdaLNs, each (N, L, D) or broadcastable (N, 1, D).

        temb: (N, Dt) SiLU of the timestep embedding; z: None (dropped), dense (N, L, Dz), or compact (N, S, Dz)
        with ``z_index`` (N, L) naming the row of z for each token. With the compact form the linear map and the
        folding run on the S distinct rows only (S = K + 1 in pretraining: K visible tokens + the shared global
        mean); each of the four results is then gathered on its own (no concatenation to copy in the backward).
        """
        n, d = temb.shape[0], self.dim
        ts1, tb1, ts2, tb2 = self.t_mod(temb)[:, None, :].chunk(4, dim=-1)  # 4 x (N, 1, D)
        if self.z_mod is None:
            if z is not None:
                raise ValueError("z: this decoder is unconditional (built without a condition width)")
            return ts1 + 1, tb1, ts2 + 1, tb2  # 4 x (N, 1, D)
        if z is None:
            zm = self.z_mod.bias.expand(n, 1, 4 * d)  # (N, 1, 4D): z = 0
        else:
            zm = self.z_mod(z)  # (N, S, 4D)
        zs1, zb1, zs2, zb2 = zm.chunk(4, dim=-1)  # 4 x (N, S, D)
        zs1, zs2 = zs1 + 1, zs2 + 1
        mods = (zs1 * (ts1 + 1), torch.addcmul(zb1, zs1, tb1), zs2 * (ts2 + 1), torch.addcmul(zb2, zs2, tb2))
        if z is None or z_index is None:
            return mods  # 4 x (N, S|1, D)
        s = zm.shape[1]
        flat = (z_index + torch.arange(n, device=z_index.device)[:, None] * s).reshape(-1)  # (N*L,)
        return tuple(m.reshape(n * s, d).index_select(0, flat).reshape(n, -1, d) for m in mods)  # 4 x (N, L, D)

    def forward(
        self,
        h: torch.Tensor,
        temb: torch.Tensor,
        z: Optional[torch.Tensor] = None,
        z_index: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        scale1, shift1, scale2, shift2 = self.modulation(temb, z, z_index)  # 4 x (N, L|1, D)
        h = h + self.attn(modulate(h, scale1, shift1))  # (N, L, D)
        return h + self.mlp(modulate(h, scale2, shift2))  # (N, L, D)


def initialize_weights(module: nn.Module) -> None:
    """All weight initialisation of the project's models, in one place.

    - Linear: Xavier-uniform weights, zero bias (JAX ViT / MAE / released code);
    - LayerNorm: weight 1, bias 0;
    - positional embeddings: truncated normal, std 0.02 (MAE);
    - AdaLN modulation linears (``t_mod``, ``z_mod``) and the timestep MLP: normal std 0.02 with zero bias, so
      each block starts near plain LN (see :class:`DecoderBlock`).
    Deliberately no zero-init of the output layer: the gradient must reach the encoder through z from step 0.
    """
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for m in module.modules():
        if isinstance(m, FactorisedPosEmbed):
            nn.init.trunc_normal_(m.temporal, std=POS_INIT_STD, a=-2 * POS_INIT_STD, b=2 * POS_INIT_STD)
            nn.init.trunc_normal_(m.joint, std=POS_INIT_STD, a=-2 * POS_INIT_STD, b=2 * POS_INIT_STD)
        elif isinstance(m, DecoderBlock):
            for lin in (m.t_mod, m.z_mod) if m.z_mod is not None else (m.t_mod,):
                nn.init.normal_(lin.weight, std=MOD_INIT_STD)
                nn.init.zeros_(lin.bias)
        elif isinstance(m, TimestepEmbedder):
            for lin in (m.fc1, m.fc2):
                nn.init.normal_(lin.weight, std=MOD_INIT_STD)
                nn.init.zeros_(lin.bias)
