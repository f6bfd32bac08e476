"""Features for the generation metrics (FID, KID, diversity, precision/recall) from an action classifier.

METHOD.md "Generative tasks": the metrics are computed on features of an action classifier trained on the same
data; here that classifier is OUR fine-tuned encoder. :func:`load_feature_extractor` accepts:

* a fine-tuning checkpoint (``eval_state.protocol == "finetune"``, written by ``macdiff_ray.eval.probe``; its
  ``model`` holds ``encoder.*`` + ``head.*``): source ``"finetuned-classifier"``;
* a linear-probe checkpoint (``protocol == "linear"``): the frozen pretrained encoder + a linear head, source
  ``"linear-probe-classifier"``;
* FALLBACK, a pretraining checkpoint (``model`` holds ``encoder.*`` + ``decoder.*``): the pretrained encoder with no
  classifier training at all, source ``"pretrain-encoder-fallback"``. Output tables must label it (the driver
  does): these features were not trained to separate actions.

Feature kinds:

* ``pooled`` (default): the encoder's tokens averaged over time and joints, ``(B, D)``; for a fine-tuned
  checkpoint that is the fine-tuned encoder's pooled output, the input of the head's feature path;
* ``penultimate``: the hidden activation of the fine-tuning MLP head (``GELU(W1 f + b1)``, ``(B, H)``, the layer
  before the logits, head dropout off); fine-tuning checkpoints only.

Inputs are normalised with SOME stats (the generator's); :meth:`FeatureExtractor.features` maps them to metres and
into the classifier's own normalisation, and resamples time linearly when the classifier was trained on a
different number of frames (documented approximation; equal T0 is the normal case).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from macdiff_ray.config import ConfigError

__all__ = ["FEATURE_KINDS", "SOURCES", "FeatureExtractor", "load_feature_extractor", "checkpoint_kind"]

FEATURE_KINDS = ("pooled", "penultimate")
SOURCES = ("finetuned-classifier", "linear-probe-classifier", "pretrain-encoder-fallback")


def checkpoint_kind(state: Mapping[str, Any]) -> str:
    """One of :data:`SOURCES` for a loaded checkpoint dict; ``ConfigError`` when it is none of them."""
    protocol = (state.get("eval_state") or {}).get("protocol")
    if protocol == "finetune":
        return "finetuned-classifier"
    if protocol == "linear":
        return "linear-probe-classifier"
    keys = state.get("model") or {}
    if any(k.startswith("decoder.") for k in keys) and any(k.startswith("encoder.") for k in keys):
        return "pretrain-encoder-fallback"
    raise ConfigError(f"classifier checkpoint: neither a fine-tuning/linear-probe checkpoint (eval_state.protocol="
                      f"{protocol!r}) nor a pretraining checkpoint (encoder.* + decoder.* weights)")


@dataclass
class FeatureExtractor:
    """A frozen encoder (+ optional head hidden layer) that turns normalised sequences into feature vectors.

    Attributes: ``encoder`` (SkeletonEncoder, eval mode), ``kind`` (:data:`FEATURE_KINDS`), ``source``
    (:data:`SOURCES`), ``stats`` (the classifier's ``{"mean", "std"}``), ``num_frames`` (its T0), ``layout_name``,
    ``head_feature`` (``pooled``/``per_joint``, what its head reads), ``hidden`` (the head's first Linear, for
    ``penultimate``), ``checkpoint`` (path), ``epoch``.
    """

    encoder: nn.Module
    kind: str
    source: str
    stats: dict
    num_frames: int
    layout_name: Optional[str]
    head_feature: str = "pooled"
    hidden: Optional[nn.Linear] = None
    checkpoint: str = ""
    epoch: Optional[int] = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def label(self) -> str:
        """Human-readable description for tables."""
        return f"{self.source} ({self.kind} features, {os.path.basename(self.checkpoint.rstrip('/')) or '?'})"

    def describe(self) -> dict:
        return {"source": self.source, "kind": self.kind, "checkpoint": self.checkpoint, "epoch": self.epoch,
                "num_frames": self.num_frames, "layout": self.layout_name, "head_feature": self.head_feature,
                "fallback": self.source == "pretrain-encoder-fallback"}

    def _to_classifier_space(self, x: torch.Tensor, stats_in: Mapping[str, Sequence[float]]) -> torch.Tensor:
        """x (N, T, V, C) normalised with ``stats_in`` -> (N, T_cls, V, C) normalised with the classifier's."""
        mi = torch.as_tensor(np.asarray(stats_in["mean"], np.float32), device=x.device)  # (C,)
        si = torch.as_tensor(np.asarray(stats_in["std"], np.float32), device=x.device)  # (C,)
        mc = torch.as_tensor(np.asarray(self.stats["mean"], np.float32), device=x.device)  # (C,)
        sc = torch.as_tensor(np.asarray(self.stats["std"], np.float32), device=x.device)  # (C,)
        x = ((x * si + mi) - mc) / sc  # (N, T, V, C) metres -> classifier normalisation
        if x.shape[1] != self.num_frames:
            n, t, v, c = x.shape
            flat = x.permute(0, 2, 3, 1).reshape(n, v * c, t)  # (N, V*C, T)
            flat = F.interpolate(flat, size=self.num_frames, mode="linear", align_corners=True)  # (N, V*C, T_cls)
            x = flat.reshape(n, v, c, self.num_frames).permute(0, 3, 1, 2)  # (N, T_cls, V, C)
        return x.contiguous()

    @torch.no_grad()
    def features(self, x: Any, stats_in: Mapping[str, Sequence[float]], batch_size: int = 64) -> np.ndarray:
        """Features of single-person sequences.

        Args:
            x: ``(N, T, V, C)`` float, normalised with ``stats_in`` (numpy or torch).
            stats_in: ``{"mean": [C], "std": [C]}`` of ``x``.
            batch_size: rows per forward pass.

        Returns:
            float64 ``(N, F)``: ``F = D`` for ``pooled``, the head's hidden size for ``penultimate``.
        """
        xt = torch.as_tensor(np.asarray(x, np.float32) if not torch.is_tensor(x) else x, dtype=torch.float32)
        if xt.dim() != 4:
            raise ValueError(f"x: expected (N, T, V, C), got shape {tuple(xt.shape)}")
        if xt.shape[2] != self.encoder.cfg.num_joints:
            raise ValueError(f"x has V={xt.shape[2]} joints but the classifier encoder expects "
                             f"{self.encoder.cfg.num_joints} (layout {self.layout_name!r})")
        out = []
        for a in range(0, xt.shape[0], batch_size):
            xb = self._to_classifier_space(xt[a : a + batch_size].to(self.device), stats_in)  # (b, T_cls, V, C)
            if self.kind == "pooled":
                f = self.encoder.pooled(xb)  # (b, D)
            else:
                if self.head_feature == "pooled":
                    f = self.encoder.pooled(xb)  # (b, D)
                else:
                    f = self.encoder.per_joint(xb).flatten(1)  # (b, V*D)
                f = F.gelu(self.hidden(f))  # (b, H) the MLP head's hidden layer (dropout is off at inference)
            out.append(f.double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0))


def load_feature_extractor(
    path: str | os.PathLike,
    *,
    kind: str = "pooled",
    allow_fallback: bool = True,
    device: str | torch.device = "cpu",
) -> FeatureExtractor:
    """Build a :class:`FeatureExtractor` from a checkpoint dir / ``.pt`` / run dir (``load_checkpoint``).

    ``allow_fallback=False`` refuses a pretraining checkpoint (only trained classifiers). ``penultimate`` needs a
    fine-tuning checkpoint (its MLP head).
    """
    from macdiff_ray.eval.features import build_encoder
    from macdiff_ray.train.checkpoint import load_checkpoint

    if kind not in FEATURE_KINDS:
        raise ConfigError(f"classifier feature kind: {kind!r} is not one of {list(FEATURE_KINDS)}")
    state = load_checkpoint(path)
    source = checkpoint_kind(state)
    if source == "pretrain-encoder-fallback" and not allow_fallback:
        raise ConfigError(f"{path}: a pretraining checkpoint, not a trained classifier (fallback disallowed)")
    cfg = state.get("config") or {}
    if cfg.get("joint_map"):
        raise ConfigError(f"{path}: classifier was trained with a joint map ({cfg['joint_map']!r}); its features "
                          "do not apply to the generator's joints")
    mc = state["model_config"]
    encoder, _ = build_encoder(checkpoint=None, preset=None, num_joints=int(mc["num_joints"]),
                               num_frames=int(mc["num_frames"]), state=state)
    encoder.eval().requires_grad_(False).to(device)
    head_feature = str(cfg.get("feature", "pooled"))
    hidden = None
    if kind == "penultimate":
        if source != "finetuned-classifier":
            raise ConfigError(f"{path}: 'penultimate' features need a fine-tuning checkpoint (MLP head), got {source}")
        w, b = state["model"].get("head.net.1.weight"), state["model"].get("head.net.1.bias")
        if w is None or b is None:
            raise ConfigError(f"{path}: no MLP head weights head.net.1.* in the fine-tuning checkpoint")
        hidden = nn.Linear(w.shape[1], w.shape[0])
        hidden.load_state_dict({"weight": w, "bias": b})
        hidden.eval().requires_grad_(False).to(device)
        if head_feature not in ("pooled", "per_joint"):
            raise ConfigError(f"{path}: head reads feature {head_feature!r}; expected pooled or per_joint")
    data = state.get("data") or {}
    if not data.get("stats"):
        raise ConfigError(f"{path}: checkpoint has no data.stats (needed to normalise the classifier's input)")
    return FeatureExtractor(
        encoder=encoder, kind=kind, source=source, stats=dict(data["stats"]), num_frames=int(mc["num_frames"]),
        layout_name=(data.get("layout") or {}).get("name"), head_feature=head_feature, hidden=hidden,
        checkpoint=str(path), epoch=int(state.get("epoch", 0)), device=torch.device(device),
    )
