"""Classification heads and the encoder + head classifier used by every probe and by fine-tuning.

Feature kinds (what the head sees, persons averaged over the valid ones):

- ``pooled``: mean over time, joints -> ``(B, D)`` (the MAMP head);
- ``per_joint``: mean over time -> ``(B, V, D)`` flattened to ``V*D`` (the MacDiff head);
- ``raw``: the normalised input coordinates ``(B, T, V, C)`` flattened (no encoder: the raw-coordinate baseline).

Linear probe head: ``BatchNorm1d(affine=False)`` then one ``Linear``. Fine-tuning heads: ``mlp`` (dropout, Linear,
GELU, Linear) or ``bn_mlp`` (the released code's: dropout, Linear to 2048, BatchNorm, ReLU, Linear).
"""

from __future__ import annotations

from typing import Literal, Optional

import torch
from torch import nn

from macdiff_ray.eval.features import encode_persons
from macdiff_ray.eval.transfer import JointMap, apply_joint_map

FeatureKind = Literal["pooled", "per_joint", "raw"]


def feature_dim(kind: str, width: int, num_joints: int, num_frames: int, channels: int) -> int:
    """Length of the flattened feature vector of ``kind``."""
    if kind == "pooled":
        return width
    if kind == "per_joint":
        return num_joints * width
    if kind == "raw":
        return num_frames * num_joints * channels
    raise ValueError(f"feature kind: {kind!r} is not one of ['pooled', 'per_joint', 'raw']")


class LinearHead(nn.Module):
    """``(B, F) -> (B, classes)``: BatchNorm without affine, then one linear layer."""

    def __init__(self, in_dim: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm1d(in_dim, affine=False)
        self.fc = nn.Linear(in_dim, num_classes)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bn(f))  # (B, classes)


class MLPHead(nn.Module):
    """``(B, F) -> (B, classes)``: dropout, Linear(F, hidden), GELU, Linear(hidden, classes)."""

    def __init__(self, in_dim: int, num_classes: int, hidden: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, hidden), nn.GELU(),
                                 nn.Linear(hidden, num_classes))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.net(f)  # (B, classes)


class BNMLPHead(nn.Module):
    """The released code's fine-tuning head: ``(B, F) -> (B, classes)``: dropout, Linear(F, hidden), BatchNorm1d,
    ReLU, Linear(hidden, classes); with ``per_joint`` features F = V x D and hidden 2048 (METHOD.md)."""

    def __init__(self, in_dim: int, num_classes: int, hidden: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                                 nn.Linear(hidden, num_classes))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.net(f)  # (B, classes)


class Classifier(nn.Module):
    """Encoder (or none, for ``raw``) + head.

    ``forward(x (B, M, T, V, C), person_valid (B, M)) -> logits (B, classes)``. With ``frozen=True`` the encoder
    runs in eval mode under ``torch.no_grad`` whatever the module's mode (linear probe); :meth:`train` keeps it
    in eval mode too.
    """

    def __init__(self, encoder: Optional[nn.Module], head: nn.Module, kind: str, *, frozen: bool,
                 joint_map: Optional[JointMap] = None):
        super().__init__()
        if kind != "raw" and encoder is None:
            raise ValueError(f"feature kind {kind!r} needs an encoder")
        self.encoder = encoder if kind != "raw" else None
        self.head = head
        self.kind = kind
        self.frozen = frozen
        self.joint_map = joint_map
        if frozen and self.encoder is not None:
            for p in self.encoder.parameters():
                p.requires_grad_(False)
            self.encoder.eval()

    def train(self, mode: bool = True) -> "Classifier":
        super().train(mode)
        if self.frozen and self.encoder is not None:
            self.encoder.eval()
        return self

    def features(self, x: torch.Tensor, person_valid: torch.Tensor) -> torch.Tensor:
        """(B, M, T, V, C), (B, M) -> flattened features (B, F)."""
        x = apply_joint_map(x, self.joint_map)  # (B, M, T, V_src, C)
        if self.frozen:
            with torch.no_grad():
                f = encode_persons(self.encoder, x, person_valid, self.kind)
        else:
            f = encode_persons(self.encoder, x, person_valid, self.kind)
        return f.flatten(1)  # (B, F)

    def forward(self, x: torch.Tensor, person_valid: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x, person_valid))  # (B, classes)


def layer_decay_groups(model: Classifier, lr: float, weight_decay: float, decay: float) -> list[dict]:
    """AdamW parameter groups with layer-wise lr decay (BEiT/MAE style).

    Layer ids: patch/position embeddings 0, encoder block i -> i + 1, final norm and head ``depth + 1``. A group's
    lr is ``lr * decay ** (depth + 1 - layer_id)`` (stored as ``lr_scale`` so a schedule can rescale it);
    no weight decay on 1-d parameters (biases, norms) and embeddings.
    """
    enc = model.encoder
    depth = len(enc.blocks) if enc is not None else 0
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith("encoder."):
            sub = name[len("encoder."):]
            if sub.startswith("blocks."):
                layer = int(sub.split(".")[1]) + 1
            elif sub.startswith("norm."):
                layer = depth + 1
            else:
                layer = 0
        else:
            layer = depth + 1
        no_wd = p.ndim <= 1 or "embed" in name.rsplit(".", 1)[-1] or "pos" in name.rsplit(".", 1)[-1]
        key = (layer, no_wd)
        if key not in groups:
            scale = decay ** (depth + 1 - layer)
            groups[key] = {"params": [], "weight_decay": 0.0 if no_wd else weight_decay, "lr": lr * scale,
                           "lr_scale": scale, "name": f"layer{layer}{'_no_wd' if no_wd else ''}"}
        groups[key]["params"].append(p)
    return [groups[k] for k in sorted(groups)]
