"""Encoders for evaluation (pretrained, or randomly initialised for the baseline) and person-averaged features.

Batches carry ``x (B, M, T, V, C)`` and ``person_valid (B, M)``; the encoder reads ``(N, T, V, C)``. Persons are
folded into N, encoded, and averaged over the valid persons of each sample (a sample with no valid person, which
the data layer never produces, would average over all M).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from macdiff_ray.config import ConfigError
from macdiff_ray.model.config import ENCODER_METHODS


def encode_persons(encoder: Optional[nn.Module], x: torch.Tensor, person_valid: torch.Tensor, kind: str) -> torch.Tensor:
    """Person-averaged features.

    Args:
        encoder: a ``SkeletonEncoder`` (ignored for ``kind="raw"``).
        x: ``(B, M, T, V, C)`` normalised; person_valid: ``(B, M)`` bool.
        kind: ``pooled`` -> ``(B, D)``; ``per_joint`` -> ``(B, V, D)``; ``raw`` -> ``(B, T, V, C)``.
    """
    if x.ndim == 4:  # (B, T, V, C): one person per row
        x, person_valid = x[:, None], torch.ones(x.shape[0], 1, dtype=torch.bool, device=x.device)
    b, m = x.shape[:2]
    w = person_valid.to(x.dtype)  # (B, M)
    empty = w.sum(1, keepdim=True) == 0  # (B, 1)
    w = torch.where(empty, torch.ones_like(w), w)  # (B, M)
    w = w / w.sum(1, keepdim=True)  # (B, M) averaging weights
    if kind == "raw":
        f = x  # (B, M, T, V, C)
    else:
        flat = x.flatten(0, 1)  # (B*M, T, V, C)
        if kind == "pooled":
            f = encoder.pooled(flat)  # (B*M, D)
        elif kind == "per_joint":
            f = encoder.per_joint(flat)  # (B*M, V, D)
        else:
            raise ValueError(f"feature kind: {kind!r} is not one of ['pooled', 'per_joint', 'raw']")
        f = f.reshape(b, m, *f.shape[1:])  # (B, M, ...)
    w = w.reshape(b, m, *([1] * (f.ndim - 2)))  # (B, M, 1, ...)
    return (f * w).sum(1)  # (B, ...)


def build_encoder(
    *,
    checkpoint: Optional[str],
    preset: Optional[str],
    num_joints: int,
    num_frames: int,
    seed: int = 0,
    drop_path: float = 0.0,
    state: Optional[dict] = None,
) -> tuple[nn.Module, dict]:
    """The encoder to evaluate and a description of where it came from.

    ``checkpoint`` (or an already loaded ``state``): the pretrained encoder, its ModelConfig taken from the
    checkpoint. Otherwise ``preset``: a randomly initialised encoder (``torch.manual_seed(seed)``), the baseline
    every pretrained probe must beat. ``num_joints`` / ``num_frames`` describe the (possibly mapped) input.

    Returns ``(encoder, {"source": "checkpoint"|"random", "model_config": dict, "checkpoint_epoch": int|None})``.
    """
    from macdiff_ray.config import from_dict, to_dict
    from macdiff_ray.model import ModelConfig, SkeletonEncoder, model_preset

    if state is None and checkpoint:
        from macdiff_ray.train.checkpoint import load_checkpoint

        state = load_checkpoint(checkpoint)
    if state is not None:
        from macdiff_ray.train.checkpoint import checkpoint_method

        method = checkpoint_method(state)
        if method not in ENCODER_METHODS:
            raise ConfigError(f"checkpoint {checkpoint or '(given state)'}: method {method!r} is a decoder-only "
                              f"diffusion model with no encoder to probe or fine-tune; evaluation needs a checkpoint "
                              f"of one of {list(ENCODER_METHODS)}")
        mc = dict(state["model_config"])
        mc["drop_path"] = drop_path
        mc["use_compile"] = False
        cfg = from_dict(ModelConfig, mc)
        if cfg.num_frames != num_frames:
            raise ConfigError(f"num_frames: the checkpoint encoder was built for {cfg.num_frames} frames, "
                              f"the evaluation asks for {num_frames}; use --num-frames {cfg.num_frames}")
        if cfg.num_joints != num_joints:
            raise ConfigError(f"num_joints: checkpoint encoder has {cfg.num_joints} joints, input has {num_joints}")
        enc = SkeletonEncoder(cfg)
        sd = state["model"]
        prefix = "encoder." if any(k.startswith("encoder.") for k in sd) else ""
        enc.load_encoder_state(sd, prefix=prefix)
        return enc, {"source": "checkpoint", "model_config": to_dict(cfg), "checkpoint_epoch": int(state["epoch"])}
    if not preset:
        raise ConfigError("an encoder needs --checkpoint, or --random-init with --preset")
    torch.manual_seed(seed)
    cfg = model_preset(preset, num_joints=num_joints, num_frames=num_frames, drop_path=drop_path)
    return SkeletonEncoder(cfg), {"source": "random", "model_config": to_dict(cfg), "checkpoint_epoch": None}


def describe_eval_data(data_dir: str, benchmark: str) -> dict:
    """``dataset, benchmark, layout, stats, num_classes, num_joints, channels, num_train, num_test`` from the
    manifest; refuses a benchmark the dataset does not serve."""
    from macdiff_ray.data.manifest import load_manifest

    if not data_dir:
        raise ConfigError("data_dir: empty; give a prepared dataset directory (--data)")
    m = load_manifest(data_dir)
    if benchmark not in m["split_counts"]:
        raise ConfigError(f"benchmark: {benchmark!r} is not served by {data_dir} (dataset {m['dataset']!r}); "
                          f"choose one of {sorted(m['split_counts'])}")
    counts = m["split_counts"][benchmark]
    return {"dataset": m["dataset"], "benchmark": benchmark, "layout": m["layout"], "stats": m["stats"][benchmark],
            "num_classes": int(m["num_classes"]), "num_joints": int(m["num_joints"]),
            "channels": int(m["channels"]), "num_train": int(counts["train"]), "num_test": int(counts.get("test", 0)),
            "align": m.get("align")}


def ckpt_data_section(info: dict) -> dict[str, Any]:
    return {**{k: info[k] for k in ("dataset", "benchmark", "layout", "stats", "num_classes")},
            "align": info.get("align")}
