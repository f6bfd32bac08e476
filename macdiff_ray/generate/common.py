"""What the generative drivers share: the x0 clamp, config checks, per-chunk seeds, loading the generator checkpoint
and writing results. No Ray, no model code here."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from macdiff_ray.config import ConfigError, from_dict

__all__ = ["CLIP_X0", "check_common", "chunk_seed", "load_generator", "write_json", "data_info", "fmt",
           "config_from_args", "checkpoint_protocol"]

# x0_hat clamp during sampling, in units of the per-coordinate training std. Measured on the prepared training
# splits: max |x| 7.3 (NW-UCLA, 99.9th percentile 4.8) and 4.0 (synthetic), so 8 never clips real data. Without
# it the inverse-cosine schedule's alpha_bar ~ 1e-6 at t = T-1 turns small eps errors into x0 of hundreds of metres.
CLIP_X0 = 8.0


def check_common(cfg: Any, name: str) -> None:
    for f in ("checkpoint", "data_dir", "benchmark", "output"):
        if not isinstance(getattr(cfg, f), str) or not getattr(cfg, f):
            raise ConfigError(f"{name}.{f}: empty; give --{f.replace('_dir', '').replace('_', '-')}")
    if cfg.split not in ("train", "test"):
        raise ConfigError(f"{name}.split: expected 'train' or 'test', got {cfg.split!r}")
    if cfg.steps < 1:
        raise ConfigError(f"{name}.steps (--steps): expected >= 1 DDIM steps, got {cfg.steps}")
    if not 0.0 <= cfg.eta <= 1.0:
        raise ConfigError(f"{name}.eta: expected a value in [0, 1], got {cfg.eta}")
    if cfg.workers < 0:
        raise ConfigError(f"{name}.workers (--workers): expected >= 0 (0 = in-process), got {cfg.workers}")
    if cfg.chunk_size < 1:
        raise ConfigError(f"{name}.chunk_size: expected >= 1, got {cfg.chunk_size}")
    if not 0.0 < cfg.crop <= 1.0:
        raise ConfigError(f"{name}.crop: expected a value in (0, 1], got {cfg.crop}")
    if cfg.cpu_per_worker < 0:
        raise ConfigError(f"{name}.cpu_per_worker: expected >= 0, got {cfg.cpu_per_worker}")
    if cfg.render < 0:
        raise ConfigError(f"{name}.render: expected >= 0, got {cfg.render}")




def chunk_seed(seed: int, task: int, chunk: int) -> int:
    """Seed of one chunk of one task (table row), independent of how chunks are spread over workers."""
    return int(np.random.SeedSequence([int(seed), int(task), int(chunk), 0x6E4]).generate_state(1)[0])



def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=float) + "\n")
    os.replace(tmp, path)


def fmt(v: Optional[float], digits: int = 1) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def data_info(manifest: Mapping[str, Any]) -> dict:
    return {"dataset": manifest["dataset"], "layout": manifest["layout"]["name"], "units": manifest.get("units", "m")}


def checkpoint_protocol(ckpt: Mapping[str, Any]) -> dict:
    """What a generator checkpoint is: ``{method, decoder_finetune (dict or None)}``; the drivers pick their
    defaults from it (a fine-tuned decoder reconstructs under the global condition)."""
    from macdiff_ray.train.checkpoint import checkpoint_method

    ft = ckpt.get("decoder_finetune")
    return {"method": checkpoint_method(ckpt), "decoder_finetune": dict(ft) if isinstance(ft, Mapping) else None}


def load_generator(checkpoint: str, data_dir: str):
    """``(bundle, manifest, layout, info)`` of a generator checkpoint for the data in ``data_dir`` (layouts must
    match). ``info``: path, epoch, step, note, method, decoder_finetune."""
    from macdiff_ray.augment.pool import model_bundle
    from macdiff_ray.data.layouts import JointLayout
    from macdiff_ray.data.manifest import load_manifest
    from macdiff_ray.train.checkpoint import check_compatible, load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    manifest = load_manifest(data_dir)
    check_compatible(ckpt, None, manifest["layout"])
    bundle = model_bundle(ckpt)
    proto = checkpoint_protocol(ckpt)
    ft = proto["decoder_finetune"]
    info = {"path": str(checkpoint), "epoch": int(ckpt.get("epoch", 0)), "step": int(ckpt.get("step", 0)),
            "note": (ckpt.get("config") or {}).get("note"), "method": proto["method"],
            "decoder_finetune": None if ft is None else {k: ft.get(k) for k in (
                "condition", "encoder_view", "epochs", "source_checkpoint", "source_epoch")}}
    return bundle, manifest, JointLayout.from_dict(manifest["layout"]), info


def config_from_args(cls: type, values: Mapping[str, Any]):
    """Strict config from a flat dict (CLI values; tuples from lists)."""
    return from_dict(cls, {k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items()})
