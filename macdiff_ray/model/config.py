"""``ModelConfig`` (the model's only constructor argument) and the named presets ``paper``, ``small``, ``tiny``.

Parameter counts at V = 25, T = 120 (``paper`` preset, measured by tests/test_model.py with an exact formula):
encoder 6,336,000 (~6.3M, the paper's figure), decoder 5,621,644 (~5.6M).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from macdiff_ray.config import ConfigError, from_dict, to_dict
from macdiff_ray.model.masking import MASKINGS, num_kept

LOSS_ON = ("masked", "all")
TARGETS = ("eps", "x0", "motion")
# The pretraining objective: MacDiff and the baselines of the paper's Tables 1-6, all on the same encoder and the
# same AdaLN Transformer decoder (docs/ARCHITECTURE.md "Methods"):
#   macdiff  masked encoder + conditional diffusion decoder (eps, or x0)
#   ddim     the decoder alone, an unconditional diffusion model (eps); no encoder parameters at all
#   mdm      the decoder alone, unconditional, x0-prediction (MDM); ``dec_tokens="frame"`` is MDM-orig's
#            temporal-only attention (one token per temporal patch holding every joint)
#   mae      SkeletonMAE-style: the encoder's condition, a blank decoder input, coordinates of masked tokens
#   mamp     MAMP: as mae, but the target is the motion (frame differences) and the masking motion-aware
METHODS = ("macdiff", "ddim", "mdm", "mae", "mamp")
ENCODER_METHODS = ("macdiff", "mae", "mamp")
DIFFUSION_METHODS = ("macdiff", "ddim", "mdm")
DEC_TOKENS = ("joint", "frame")


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
    - ``masking``: the encoder's masking strategy (:mod:`macdiff_ray.model.masking`): ``random`` (default, the
      paper's), ``temporal``, ``tube``, ``spatial_temporal``, ``motion_aware`` (MAMP's); ``motion_temperature`` is
      the softmax temperature tau of ``motion_aware`` (0.75, MAMP's).
    - ``method``: the objective (``METHODS`` above); :func:`method_overrides` gives each one's settings.
      ``target`` ``"motion"`` belongs to ``mamp`` alone.
    - ``dec_tokens``: ``joint`` (default: a token is one joint over ``patch_len`` frames) or ``frame`` (one token per
      temporal patch holding every joint: attention over time only; decoder-only methods).
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
    target: Literal["eps", "x0", "motion"] = "eps"
    uniformity_weight: float = 0.02
    drop_path: float = 0.0
    time_embed_dim: int = 64
    use_compile: bool = False
    masking: Literal["random", "temporal", "tube", "spatial_temporal", "motion_aware"] = "random"
    motion_temperature: float = 0.75
    method: Literal["macdiff", "ddim", "mdm", "mae", "mamp"] = "macdiff"
    dec_tokens: Literal["joint", "frame"] = "joint"

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
        if self.masking not in MASKINGS:
            raise ConfigError(f"ModelConfig.masking: {self.masking!r} is not one of {list(MASKINGS)}")
        if not self.motion_temperature > 0:
            raise ConfigError(
                f"ModelConfig.motion_temperature: expected a positive number, got {self.motion_temperature!r}"
            )
        if self.method not in METHODS:
            raise ConfigError(f"ModelConfig.method: {self.method!r} is not one of {list(METHODS)}")
        if self.dec_tokens not in DEC_TOKENS:
            raise ConfigError(f"ModelConfig.dec_tokens: {self.dec_tokens!r} is not one of {list(DEC_TOKENS)}")
        self._check_method()
        if self.has_encoder and self.loss_on == "masked" and self.num_visible == self.num_tokens:
            raise ConfigError(
                f"ModelConfig.loss_on: 'masked' needs at least one masked token, but mask_ratio={self.mask_ratio} "
                f"keeps all {self.num_tokens}; use loss_on='all'"
            )

    def _check_method(self) -> None:
        """The settings each method needs (``method_overrides`` sets them); anything else is refused, not ignored."""
        m = self.method
        allowed = {"macdiff": ("eps", "x0"), "ddim": ("eps",), "mdm": ("x0",), "mae": ("x0",), "mamp": ("motion",)}[m]
        if self.target not in allowed:
            raise ConfigError(f"ModelConfig.target: {self.target!r} does not fit method {m!r} (expected "
                              f"{' or '.join(map(repr, allowed))}; macdiff_ray.model.method_overrides({m!r}) sets it)")
        if m not in ENCODER_METHODS:
            if self.loss_on != "all":
                raise ConfigError(f"ModelConfig.loss_on: method {m!r} has no encoder and so no masked tokens; use "
                                  "loss_on='all'")
            if self.uniformity_weight != 0:
                raise ConfigError(f"ModelConfig.uniformity_weight: method {m!r} has no encoder tokens to make "
                                  "uniform; use 0")
        elif self.dec_tokens != "joint":
            raise ConfigError(f"ModelConfig.dec_tokens: 'frame' tokens are for decoder-only methods (ddim, mdm); "
                              f"method {m!r} conditions the decoder per joint token")
        if m in ("mae", "mamp") and self.cond_drop_prob != 0:
            raise ConfigError(f"ModelConfig.cond_drop_prob: method {m!r} regresses its target from the condition "
                              "alone (no diffusion input); dropping it leaves nothing to predict from: use 0")

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
        """K, the tokens the encoder sees in pretraining under ``masking`` (:func:`masking.num_kept`; random
        masking: round((1 - mask_ratio) * L), at least 1)."""
        return num_kept(self.masking, self.mask_ratio, self.num_patches, self.num_joints)

    @property
    def has_encoder(self) -> bool:
        """False for the decoder-only methods (ddim, mdm)."""
        return self.method in ENCODER_METHODS

    @property
    def is_diffusion(self) -> bool:
        """True where the decoder is a denoiser of x_t (macdiff, ddim, mdm); mae and mamp regress their target."""
        return self.method in DIFFUSION_METHODS

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


# Method presets: the ModelConfig settings of each objective (applied over a size preset, under user overrides).
_METHOD_PRESETS: dict[str, dict[str, Any]] = {
    "macdiff": {},
    "ddim": dict(method="ddim", target="eps", loss_on="all", uniformity_weight=0.0),
    "mdm": dict(method="mdm", target="x0", loss_on="all", uniformity_weight=0.0),
    # MDM-orig (paper Table 6): temporal-only attention; the paper's also has 8 layers of width 512 (set
    # dec_depth / dec_width through model_overrides: the size presets keep their own).
    "mdm_orig": dict(method="mdm", target="x0", loss_on="all", uniformity_weight=0.0, dec_tokens="frame"),
    "mae": dict(method="mae", target="x0", cond_drop_prob=0.0, uniformity_weight=0.0),
    # MAMP: motion targets, motion-aware masking with tau 0.75 (its released configs use 0.75-0.8), 90% masking.
    "mamp": dict(method="mamp", target="motion", masking="motion_aware", motion_temperature=0.75,
                 cond_drop_prob=0.0, uniformity_weight=0.0),
}
METHOD_PRESETS: tuple[str, ...] = tuple(_METHOD_PRESETS)


def method_overrides(name: str) -> dict[str, Any]:
    """The ModelConfig settings of method preset ``name`` (``METHOD_PRESETS``); a copy."""
    if name not in _METHOD_PRESETS:
        raise ConfigError(f"method: {name!r} is not one of {list(METHOD_PRESETS)}")
    return dict(_METHOD_PRESETS[name])


def model_preset(name: str, num_joints: int = 25, num_frames: int = 120, **overrides: Any) -> ModelConfig:
    """The named preset (``paper``, ``small``, ``tiny``) for a joint count and frame count, plus overrides.

    Overrides go through the strict :func:`from_dict` checks (an unknown key raises ``ConfigError``).
    """
    if name not in _PRESETS:
        raise ConfigError(f"model preset: {name!r} is not one of {list(PRESETS)}")
    d = dict(_PRESETS[name], num_joints=num_joints, num_frames=num_frames)
    d.update(overrides)
    return from_dict(ModelConfig, d)
