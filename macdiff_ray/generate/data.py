"""The data the generative drivers read, in this process: one split through the evaluation transform, the
training mean pose, and the native (not resampled) frames behind each evaluated sequence.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

__all__ = ["load_split", "train_mean_pose", "persons_of", "native_windows"]


def load_split(data_dir: str, benchmark: str, split: str, *, stats: Mapping[str, Sequence[float]], num_frames: int,
               crop: float = 0.95, limit: int = 0, seed: int = 0, read_batch: int = 256) -> dict:
    """Rows of one split through :class:`EvalTransform` (in this process).

    ``limit`` > 0 keeps a seeded random subset of that many samples (in sample_id order). Returns numpy
    ``x (N, M, T0, V, C)`` float32 normalised with ``stats``, ``person_valid (N, M)``, ``label (N,)``,
    ``sample_id (N,)``.
    """
    from macdiff_ray.data.pipeline import read_transformed, select_split
    from macdiff_ray.data.transforms import EvalTransform

    sel = select_split(data_dir, benchmark, split)
    ids = sel.sample_ids
    if len(ids) == 0:
        raise ValueError(f"{data_dir}: benchmark {benchmark!r} split {split!r} has no rows")
    if 0 < limit < len(ids):
        keep = np.sort(np.random.default_rng([int(seed), 0x5A]).choice(len(ids), limit, replace=False))
        ids = ids[keep]
    transform = EvalTransform(stats, num_frames=num_frames, crop=crop)
    return read_transformed(sel.shards, ids, transform, read_batch=read_batch)


def train_mean_pose(data_dir: str, benchmark: str, *, stats: Mapping[str, Sequence[float]], num_frames: int,
                    crop: float = 0.95, read_batch: int = 256) -> np.ndarray:
    """Mean pose (V, C) in metres over every frame of every present person of the training split (streamed)."""
    import pyarrow.parquet as pq

    from macdiff_ray.data.benchmarks import split_filter
    from macdiff_ray.data.pipeline import select_split
    from macdiff_ray.data.transforms import EvalTransform

    sel = select_split(data_dir, benchmark, "train")
    if len(sel) == 0:
        raise ValueError(f"{data_dir}: benchmark {benchmark!r} has no training rows for the mean pose")
    transform = EvalTransform(stats, num_frames=num_frames, crop=crop)
    mean = np.asarray(stats["mean"], np.float64)  # (C,)
    std = np.asarray(stats["std"], np.float64)  # (C,)
    total, count = None, 0
    for shard in sel.shards:
        table = pq.read_table(shard, filters=split_filter(benchmark, "train"))
        for a in range(0, table.num_rows, read_batch):
            out = transform(table.slice(a, read_batch))
            persons = out["x"][out["person_valid"]].astype(np.float64) * std + mean  # (P, T0, V, C) metres
            s = persons.sum(axis=(0, 1))  # (V, C)
            total = s if total is None else total + s
            count += persons.shape[0] * persons.shape[1]
    return total / count  # (V, C)


def persons_of(split: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Present persons as rows: (P, T0, V, C) and their (sample, person) index (P, 2)."""
    valid = split["person_valid"]  # (N, M)
    where = np.argwhere(valid)  # (P, 2)
    return split["x"][valid], where



def native_windows(data_dir: str, benchmark: str, split: str, sample_ids: Sequence[str], *,
                   crop: float = 0.95) -> dict:
    """The stored frames behind :func:`load_split`'s rows: for each sample id (in the given order) the centre crop
    window the evaluation transform resampled, at the data's own frame rate.

    Returns ``x`` (N, M, T_max, V, C) float32 metres as stored (zero-padded), ``start`` (N,) and ``crop_len``
    (N,) int64 (``data.transforms.crop_windows_center``: the transform read frames ``[start, start + crop_len)``).
    """
    from macdiff_ray.data.pipeline import read_rows, select_split
    from macdiff_ray.data.transforms import crop_windows_center

    sel = select_split(data_dir, benchmark, split)
    rows = read_rows(sel.shards, list(sample_ids))
    order = {sid: i for i, sid in enumerate(rows["sample_id"].tolist())}
    missing = [s for s in sample_ids if s not in order]
    if missing:
        raise ValueError(f"{data_dir}: {len(missing)} sample ids not found in {benchmark}/{split} (first {missing[0]})")
    idx = np.asarray([order[s] for s in sample_ids], np.int64)  # (N,)
    length = np.asarray(rows["length"], np.int64)[idx]  # (N,)
    start, crop_len = crop_windows_center(length, crop)  # (N,), (N,)
    return {"x": np.asarray(rows["x"], np.float32)[idx], "start": start, "crop_len": crop_len}
