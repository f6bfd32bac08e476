"""``ModelConfig`` (the model's only constructor argument) and the named presets ``paper``, ``small``, ``tiny``.

Parameter counts at V = 25, T = 120 (``paper`` preset, measured by tests/test_model.py with an exact formula):
encoder 6,336,000 (~6.3M, the paper's figure), decoder 5,621,644 (~5.6M).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from macdiff_ray.config import ConfigError, from_dict, to_dict

LOSS_ON = ("masked", "all")
TARGETS = ("eps", "x0")


@dataclass(frozen=True)
class ModelConfig:
    """MacDiff architecture and objective.

    Tokens: a token is one joint over ``patch_len`` frames; Tp = num_frames / patch_len, L = Tp * num_joints.

    - ``mask_ratio``: fraction of tokens hidden from the encoder, in [0, 1); K = round((1 - r) L) are kept (75 of 750
      at the paper's r = 0.9).
    - ``cond_drop_prob``: per-sample probability (training only) that the condition z is replaced by zeros (0.1).
    - ``loss_on``: ``"masked"`` (default; the released code: MSE averaged over masked tokens only) or ``"all"``
      (paper eq. 6: MSE over the whole noise vector).
    - ``target``: ``"eps"`` (default, paper) or ``"x0"``.
    - ``uniformity_weight``: weight of the token-uniformity term (0.02, released code; not in the paper).
    - ``drop_path``: stochastic-depth rate of the last encoder block (linear from 0), for fine-tuning; 0 to pretrain.
    - ``time_embed_dim``: width of the sinusoidal timestep embedding and its MLP (64, as the released code); each
      AdaLN maps it to (t_s, t_b).
    - ``use_compile``: ``torch.compile`` each Transformer block in place (off by default; parameter names and state
      dicts are unchanged).
    """

    num_frames: int = 120
    patch_len: int = 4
    num_joints: int = 25
    channels: int = 3
    width: int = 256
    enc_depth: int = 8
    enc_heads: int = 8
    dec_width: int = 256
    dec_depth: int = 5
    dec_heads: int = 8
    mlp_ratio: float = 4.0
    mask_ratio: float = 0.9
    cond_drop_prob: float = 0.1
    loss_on: Literal["masked", "all"] = "masked"
    target: Literal["eps", "x0"] = "eps"
    uniformity_weight: float = 0.02
    drop_path: float = 0.0
    time_embed_dim: int = 64
    use_compile: bool = False

    def __post_init__(self) -> None:
        for name in ("num_frames", "patch_len", "num_joints", "channels", "width", "enc_depth", "enc_heads",
                     "dec_width", "dec_depth", "dec_heads", "time_embed_dim"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"ModelConfig.{name}: expected a positive integer, got {v!r}")
        if self.num_frames % self.patch_len:
            raise ConfigError(
                f"ModelConfig.num_frames: {self.num_frames} is not divisible by patch_len={self.patch_len}"
            )
        if self.width % self.enc_heads:
            raise ConfigError(f"ModelConfig.width: {self.width} is not divisible by enc_heads={self.enc_heads}")
        if self.dec_width % self.dec_heads:
            raise ConfigError(
                f"ModelConfig.dec_width: {self.dec_width} is not divisible by dec_heads={self.dec_heads}"
            )
        if self.time_embed_dim % 2:
            raise ConfigError(f"ModelConfig.time_embed_dim: expected an even number, got {self.time_embed_dim}")
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ConfigError(f"ModelConfig.mask_ratio: expected a value in [0, 1), got {self.mask_ratio!r}")
        if not 0.0 <= self.cond_drop_prob <= 1.0:
            raise ConfigError(f"ModelConfig.cond_drop_prob: expected a value in [0, 1], got {self.cond_drop_prob!r}")
        if not 0.0 <= self.drop_path < 1.0:
            raise ConfigError(f"ModelConfig.drop_path: expected a value in [0, 1), got {self.drop_path!r}")
        if not self.mlp_ratio > 0:
            raise ConfigError(f"ModelConfig.mlp_ratio: expected a positive number, got {self.mlp_ratio!r}")
        if not self.uniformity_weight >= 0:
            raise ConfigError(
                f"ModelConfig.uniformity_weight: expected a non-negative number, got {self.uniformity_weight!r}"
            )
        if self.loss_on not in LOSS_ON:
            raise ConfigError(f"ModelConfig.loss_on: {self.loss_on!r} is not one of {list(LOSS_ON)}")
        if self.target not in TARGETS:
            raise ConfigError(f"ModelConfig.target: {self.target!r} is not one of {list(TARGETS)}")
        if self.num_visible < 1:
            raise ConfigError(
                f"ModelConfig.mask_ratio: {self.mask_ratio} keeps no token of {self.num_tokens} "
                f"(K = round((1 - r) * L) = 0)"
            )
        if self.loss_on == "masked" and self.num_visible == self.num_tokens:
            raise ConfigError(
                f"ModelConfig.loss_on: 'masked' needs at least one masked token, but mask_ratio={self.mask_ratio} "
                f"keeps all {self.num_tokens}; use loss_on='all'"
            )

    # Derived values (computed, never stored as inputs).
    @property
    def num_patches(self) -> int:
        """Tp, temporal patches per sequence."""
        return self.num_frames // self.patch_len

    @property
    def num_tokens(self) -> int:
        """L = Tp * V."""
        return self.num_patches * self.num_joints

    @property
    def num_visible(self) -> int:
        """K = round((1 - mask_ratio) * L), tokens the encoder sees in pretraining."""
        return int(round((1.0 - self.mask_ratio) * self.num_tokens))

    @property
    def patch_dim(self) -> int:
        """Values in one token: patch_len * channels."""
        return self.patch_len * self.channels

    def to_dict(self) -> dict:
        return to_dict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        return from_dict(cls, d)


_PRESETS: dict[str, dict[str, Any]] = {
    # Paper / released code: encoder 8 x 256 (8 heads, MLP 1024), decoder 5 x 256.
    "paper": dict(width=256, enc_depth=8, enc_heads=8, dec_width=256, dec_depth=5, dec_heads=8),
    # About a quarter of the paper's compute: a middle ground for single-machine experiments.
    "small": dict(width=128, enc_depth=6, enc_heads=4, dec_width=128, dec_depth=3, dec_heads=4),
    # Pretrains usefully in minutes on 2 CPU cores (see benchmarks/model_step.py for the measured step time).
    "tiny": dict(width=64, enc_depth=3, enc_heads=2, dec_width=64, dec_depth=2, dec_heads=2, time_embed_dim=32),
}
PRESETS: tuple[str, ...] = tuple(_PRESETS)


def model_preset(name: str, num_joints: int = 25, num_frames: int = 120, **overrides: Any) -> ModelConfig:
    """The named preset (``paper``, ``small``, ``tiny``) for a joint count and frame count, plus overrides.

    Overrides go through the strict :func:`from_dict` checks (an unknown key raises ``ConfigError``).
    """
    if name not in _PRESETS:
        raise ConfigError(f"model preset: {name!r} is not one of {list(PRESETS)}")
    d = dict(_PRESETS[name], num_joints=num_joints, num_frames=num_frames)
    d.update(overrides)
    return from_dict(ModelConfig, d)
