"""Batch inference: embed a prepared dataset with a pretrained (or random) encoder through Ray Data and an actor
pool, and write the features as Parquet shards.

``embed_split(...)`` returns a lazy ``ray.data.Dataset`` with columns ``sample_id`` (string), ``label`` (int64) and
``feature`` (float32 ``(F,)`` fixed-shape tensor: ``pooled`` D or ``per_joint`` V*D, persons averaged); each of
``num_actors`` actors loads the encoder once (``EncoderActor``), applies ``EvalTransform`` and encodes.
``write_embeddings(...)`` writes ``OUT/<split>/*.parquet`` plus ``OUT/embed.json`` (what was embedded, how).
"""

from __future__ import annotations

import time
from typing import Any, Optional

import numpy as np

from macdiff_ray.config import ConfigError


class EncoderActor:
    """Callable class for ``map_batches``: raw rows in, ``{sample_id, label, feature (B, F)}`` out."""

    def __init__(self, checkpoint: Optional[str], preset: Optional[str], info: dict, num_frames: int, feature: str,
                 seed: int, batch_size: int, joint_map: Optional[str]):
        import torch

        from macdiff_ray.data.transforms import EvalTransform
        from macdiff_ray.eval.features import build_encoder
        from macdiff_ray.eval.transfer import check_alignment, check_transfer, load_joint_map

        torch.set_num_threads(1)
        state = None
        self.joint_map = None
        num_joints = info["num_joints"]
        if checkpoint:
            from macdiff_ray.train.checkpoint import load_checkpoint

            state = load_checkpoint(checkpoint)
            check_alignment(state.get("data"), info)
            self.joint_map = check_transfer((state.get("data") or {}).get("layout"), info["layout"],
                                            load_joint_map(joint_map) if joint_map else None)
            if self.joint_map is not None:
                num_joints = len(self.joint_map.index)
        self.encoder, _ = build_encoder(checkpoint=None, preset=preset, num_joints=num_joints, num_frames=num_frames,
                                        seed=seed, state=state)
        self.encoder.eval()
        self.transform = EvalTransform(info["stats"], num_frames=num_frames, persons="all")
        self.feature = feature
        self.batch_size = batch_size

    def __call__(self, batch: dict) -> dict:
        import torch

        from macdiff_ray.eval.features import encode_persons
        from macdiff_ray.eval.transfer import apply_joint_map

        ids = np.asarray(batch["sample_id"]).astype(str)  # (B,)
        out = self.transform(batch)
        x = torch.from_numpy(np.ascontiguousarray(out["x"]))  # (B, M, T0, V, C)
        pv = torch.from_numpy(np.ascontiguousarray(out["person_valid"]))  # (B, M)
        feats = []
        with torch.no_grad():
            for i in range(0, x.shape[0], self.batch_size):
                xi = apply_joint_map(x[i:i + self.batch_size], self.joint_map)  # (b, M, T0, V_src, C)
                feats.append(encode_persons(self.encoder, xi, pv[i:i + self.batch_size], self.feature).flatten(1))
        f = torch.cat(feats).numpy().astype(np.float32)  # (B, F)
        return {"sample_id": ids, "label": out["label"].astype(np.int64), "feature": f}


def embed_split(data_dir: str, benchmark: str, split: str, *, checkpoint: Optional[str] = None,
                preset: Optional[str] = None, feature: str = "pooled", num_frames: int = 120, num_actors: int = 1,
                batch_size: int = 64, cpus_per_actor: float = 0.5, use_gpu: bool = False, seed: int = 0,
                joint_map: Optional[str] = None):
    """Lazy Ray Dataset of ``{sample_id, label, feature}`` for one split (see module docstring)."""
    from macdiff_ray.data.pipeline import make_dataset
    from macdiff_ray.eval.features import describe_eval_data

    if feature not in ("pooled", "per_joint"):
        raise ConfigError(f"feature: {feature!r} is not one of ['pooled', 'per_joint']")
    if not checkpoint and not preset:
        raise ConfigError("embed: give --checkpoint, or --random-init --preset P")
    if num_actors < 1:
        raise ConfigError(f"num_actors: {num_actors} must be >= 1")
    info = describe_eval_data(data_dir, benchmark)
    ds = make_dataset(data_dir, benchmark, split, train=False, num_frames=num_frames, transform=None)
    return ds.map_batches(
        EncoderActor,
        fn_constructor_kwargs=dict(checkpoint=checkpoint, preset=None if checkpoint else preset, info=info,
                                   num_frames=num_frames, feature=feature, seed=seed, batch_size=batch_size,
                                   joint_map=joint_map),
        batch_size=batch_size, batch_format="numpy", concurrency=num_actors, num_cpus=cpus_per_actor,
        num_gpus=1 if use_gpu else 0,
    )


def collect_features(ds) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sample_ids (N,), labels (N,), features (N, F)) of an embedded dataset, sorted by sample id."""
    ids, labels, feats = [], [], []
    for b in ds.iter_batches(batch_size=1024, batch_format="numpy"):
        ids.append(np.asarray(b["sample_id"]).astype(str))
        labels.append(np.asarray(b["label"]).astype(np.int64))
        feats.append(np.asarray(b["feature"], dtype=np.float32))
    if not ids:
        raise RuntimeError("the embedded dataset is empty")
    sid, y, f = np.concatenate(ids), np.concatenate(labels), np.concatenate(feats)
    order = np.argsort(sid, kind="stable")
    return sid[order], y[order], f[order]


def write_embeddings(data_dir: str, benchmark: str, out_dir: str, *, splits: tuple[str, ...] = ("train", "test"),
                     **kwargs: Any) -> dict:
    """Embed each split to ``OUT/<split>/`` Parquet shards; writes and returns ``OUT/embed.json``."""
    from pathlib import Path

    from macdiff_ray.train.checkpoint import code_version
    from macdiff_ray.train.logging import write_json

    t0 = time.perf_counter()
    counts = {}
    for split in splits:
        ds = embed_split(data_dir, benchmark, split, **kwargs)
        dest = str(Path(out_dir, split).resolve()) if "://" not in out_dir else f"{out_dir.rstrip('/')}/{split}"
        ds.write_parquet(dest)
        counts[split] = None
    import pyarrow.dataset as pads

    for split in splits:
        if "://" not in out_dir:
            counts[split] = pads.dataset(str(Path(out_dir, split)), format="parquet").count_rows()
    meta = {"data_dir": str(data_dir), "benchmark": benchmark, "splits": counts,
            "options": {k: v for k, v in kwargs.items()}, "wall_time_s": time.perf_counter() - t0,
            "code_version": code_version(), "columns": ["sample_id", "label", "feature"]}
    write_json(str(Path(out_dir, "embed.json")) if "://" not in out_dir else f"{out_dir.rstrip('/')}/embed.json", meta)
    return meta
