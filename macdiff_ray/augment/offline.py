"""Offline diffusion augmentation: write augmented samples as an ordinary prepared dataset.

``write_augmented_dataset`` runs the actor pool for ``epochs`` epochs (each a fresh draw of
``round(ratio x N)`` samples, as in fine-tuning), maps the samples back from the normalised space to metres
(present persons only; absent persons are not stored) and writes them with the data layer's shard writer
(``samples_to_table`` + ``write_shard``: the same Parquet columns as ``prepare_dataset``). The result loads with
``make_dataset(OUT, benchmark, "train", ...)`` like any prepared dataset.

Rows: ``sample_id = "<source id>~aug<epoch>-<k>"`` (k = position in that epoch's plan), ``label`` and the
subject/view/setup/replication/split columns of the source, ``length = T0`` (the crop of the evaluation transform
resized to the checkpoint's T0), so every row falls in the benchmark's training split.

Manifest: the data layer's schema (schema_version 1) with ``source_format = "augmented"``, the source's
``dataset``/``layout``/``num_classes``/``class_names``; ``stats`` are COPIED from the source dataset, so that a
run mixing real and augmented rows normalises both alike (the augmented rows' own moments are kept under
``augmentation.own_stats``); ``split_counts`` count this folder's rows; plus an ``augmentation`` record: source
folder, checkpoint, t_start, ratio, epochs, seed, labelled subset, number of sources.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from macdiff_ray.augment.pool import build_augmenter

__all__ = ["write_augmented_dataset", "save_random_checkpoint", "AUGMENTED_FORMAT"]

AUGMENTED_FORMAT = "augmented"


def _own_stats(x: np.ndarray, valid: np.ndarray) -> dict:
    """Mean/std per coordinate over every frame of present persons: x (N, M, T, V, C), valid (N, M)."""
    pts = x[valid].reshape(-1, x.shape[-1]).astype(np.float64)  # (P*T*V, C)
    return {"mean": pts.mean(0).tolist(), "std": pts.std(0).tolist()}


def write_augmented_dataset(
    checkpoint: str | os.PathLike,
    data_dir: str | os.PathLike,
    benchmark: str,
    output_dir: str | os.PathLike,
    *,
    labeled_fraction: Optional[float] = None,
    labeled_indices: Optional[Sequence[int]] = None,
    subset_seed: int = 0,
    t_start: int = 500,
    ratio: float = 1.0,
    epochs: int = 1,
    num_actors: int = 1,
    seed: int = 0,
    shard_rows: int = 1024,
    overwrite: bool = False,
    **augmenter_kwargs: Any,
) -> dict:
    """Generate and write augmented shards + manifest into ``output_dir``; returns the manifest. Needs Ray.

    ``augmenter_kwargs`` go to :func:`build_augmenter` (``chunk_size``, ``cpu_per_actor``, ``gpu_per_actor``,
    ``persons``, ``crop``...). The folder is written under a temporary name and renamed when complete.
    """
    from macdiff_ray import __version__
    from macdiff_ray.data.benchmarks import benchmarks_for_dataset, split_of
    from macdiff_ray.data.manifest import MANIFEST_NAME, SCHEMA_VERSION, load_manifest, sha256_file
    from macdiff_ray.data.samples import RawSample
    from macdiff_ray.data.shards import samples_to_table, write_shard

    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs: expected an integer >= 1, got {epochs!r}")
    if isinstance(shard_rows, bool) or not isinstance(shard_rows, int) or shard_rows < 1:
        raise ValueError(f"shard_rows: expected an integer >= 1, got {shard_rows!r}")
    out = Path(output_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out}: exists and is not empty; pass overwrite=True (--overwrite)")
    src_manifest = load_manifest(data_dir)

    aug = build_augmenter(
        checkpoint, data_dir, benchmark, labeled_indices, t_start, ratio, num_actors, seed,
        labeled_fraction=labeled_fraction, subset_seed=subset_seed, **augmenter_kwargs,
    )
    try:
        src = aug.sources
        mean, std = (np.asarray(src.stats[k], np.float32) for k in ("mean", "std"))  # (C,), (C,)
        samples: list[RawSample] = []
        xs, valids = [], []
        aug.prefetch(0)
        for e in range(epochs):
            if e + 1 < epochs:
                aug.prefetch(e + 1)
            batch = aug.collect(e)
            rows = aug.plan(e)  # (N_aug,) source rows, the order collect() returns
            x = batch["x"].numpy() * std + mean  # (N_aug, M, T0, V, C) metres (absent persons garbage here)
            valid = batch["person_valid"].numpy()  # (N_aug, M)
            x = x * valid[:, :, None, None, None]  # absent persons exactly zero again
            xs.append(x)
            valids.append(valid)
            for k, r in enumerate(rows):
                n_p = int(valid[k].sum())
                if not valid[k, :n_p].all():
                    raise ValueError(f"source {src.sample_id[r]}: present persons are not stored first")
                samples.append(RawSample(
                    f"{src.sample_id[r]}~aug{e}-{k}", np.ascontiguousarray(x[k, :n_p], np.float32),
                    int(src.label[r]), int(src.meta["subject"][r]), int(src.meta["view"][r]),
                    int(src.meta["setup"][r]), int(src.meta["replication"][r]), str(src.meta["split"][r]),
                ))
        wait_log = {str(k): round(float(v), 6) for k, v in aug.wait_log.items()}  # JSON keys are strings
    finally:
        aug.shutdown()

    samples.sort(key=lambda s: s.sample_id)  # shard order = sample_id order, as prepare_dataset writes
    m, t0, v, c = xs[0].shape[1:]
    dataset = src_manifest["dataset"]
    tmp = out.parent / f"{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "shards").mkdir(parents=True)
    try:
        shards = []
        for k, a in enumerate(range(0, len(samples), shard_rows)):
            table = samples_to_table(samples[a : a + shard_rows], m, t0, v, c)
            rel = f"shards/part-{k:05d}.parquet"
            write_shard(table, tmp / rel)
            shards.append({"path": rel, "rows": table.num_rows, "sha256": sha256_file(tmp / rel)})
        rows_meta = [{"label": s.label, "subject": s.subject, "view": s.view, "setup": s.setup,
                      "replication": s.replication, "split": s.split} for s in samples]
        split_counts = {}
        for b in benchmarks_for_dataset(dataset):
            which = [split_of(b, r) for r in rows_meta]
            split_counts[b] = {"train": which.count("train"), "test": which.count("test")}
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "source_format": AUGMENTED_FORMAT,
            "dataset": dataset,
            "layout": src_manifest["layout"],
            "num_classes": src_manifest["num_classes"],
            "class_names": src_manifest.get("class_names"),
            "max_persons": int(m),
            "max_frames": int(t0),
            "num_joints": int(v),
            "channels": int(c),
            "units": "m",
            "align": src_manifest.get("align"),
            "num_samples": len(samples),
            "split_counts": split_counts,
            "stats": src_manifest["stats"],
            "shards": shards,
            "skipped": [],
            "created_by": f"macdiff_ray {__version__}",
            "augmentation": {
                "source": str(Path(data_dir).resolve()),
                "benchmark": benchmark,
                "checkpoint": str(checkpoint),
                "t_start": int(t_start),
                "condition": augmenter_kwargs.get("condition", "masked"),
                "ratio": float(ratio),
                "epochs": int(epochs),
                "seed": int(seed),
                "labeled_fraction": labeled_fraction,
                "labeled_indices": None if labeled_indices is None else [int(i) for i in labeled_indices],
                "subset_seed": int(subset_seed),
                "num_sources": len(src),
                "own_stats": _own_stats(np.concatenate(xs), np.concatenate(valids)),
                "wait_seconds": wait_log,
            },
        }
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return manifest


def save_random_checkpoint(
    data_dir: str | os.PathLike,
    benchmark: str,
    directory: str | os.PathLike,
    *,
    preset: str = "tiny",
    num_frames: int = 16,
    seed: int = 0,
    method: str = "macdiff",
) -> Path:
    """Save an UNTRAINED (randomly initialised) MacDiff (or ``method`` baseline, ``METHOD_PRESETS``) as a
    pretraining checkpoint fitting ``data_dir``.

    For smoke tests and throughput benchmarks only (no pretraining run needed): its augmentations are not
    meaningful samples. The checkpoint records the dataset's layout and ``benchmark`` stats like a real one.
    """
    import torch

    from macdiff_ray.config import to_dict
    from macdiff_ray.data.manifest import load_manifest
    from macdiff_ray.diffusion import DiffusionConfig
    from macdiff_ray.model import MacDiff, method_overrides, model_preset
    from macdiff_ray.train.checkpoint import build_state, save_checkpoint

    manifest = load_manifest(data_dir)
    if benchmark not in manifest["stats"]:
        raise ValueError(f"{data_dir}/manifest.json: no stats for benchmark {benchmark!r}")
    torch.manual_seed(seed)
    cfg = model_preset(preset, num_joints=int(manifest["num_joints"]), num_frames=num_frames,
                       **method_overrides(method))
    model = MacDiff(cfg)
    state = build_state(
        model, None, None, epoch=0, step=0,
        config={"preset": preset, "method": method, "num_frames": num_frames, "diffusion": to_dict(DiffusionConfig()),
                "note": "randomly initialised, untrained (save_random_checkpoint)"},
        model_config=cfg,
        data={"dataset": manifest["dataset"], "benchmark": benchmark, "layout": manifest["layout"],
              "stats": manifest["stats"][benchmark], "num_classes": manifest["num_classes"],
              "align": manifest.get("align")},
    )
    return save_checkpoint(state, directory)
