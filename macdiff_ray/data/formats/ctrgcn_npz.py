"""The CTR-GCN / MAMP preprocessed NTU ``.npz`` (``NTU60_CS.npz`` and the like).

Keys ``x_train`` / ``x_test`` float ``(N, 300, 150)``: 300 frames x (2 persons x 25 joints x 3), zero-padded,
and ``y_train`` / ``y_test`` one-hot ``(N, K)`` (a 1-D integer label array is accepted too). The file carries
its own split, so the dataset is ``custom`` (benchmark ``custom`` reads the stored ``split`` column). Lengths
are the frames up to the last non-zero one; an all-zero second person is absent. Options ``units`` and
``center`` (default true: translate each sample so that actor 1's spine-middle in its first tracked frame is the
origin, as the NTU reader does; a no-op on files already centred that way; ``center=false`` keeps the values).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from macdiff_ray.data.formats import FormatSpec, files_matching
from macdiff_ray.data.formats.arrays import center_samples, load_npz, samples_from_arrays, unit_scale
from macdiff_ray.data.layouts import NTU25
from macdiff_ray.data.samples import DataFormatError, RawSample, center_option

PERSONS, JOINTS, CHANNELS = 2, 25, 3


def list_inputs(input_path: Path, options: dict) -> tuple[list[Path], list[dict]]:
    return files_matching(input_path, "*.npz", "CTR-GCN .npz files"), []


def _labels(path: Path, y: np.ndarray, key: str) -> np.ndarray:
    if y.ndim == 2:
        if not ((y == 0) | (y == 1)).all() or not (y.sum(axis=1) == 1).all():
            raise DataFormatError(path, f"field {key}", "2-D labels must be one-hot rows")
        return y.argmax(axis=1)
    if y.ndim == 1 and np.issubdtype(y.dtype, np.integer):
        return y
    raise DataFormatError(path, f"field {key}", f"expected one-hot (N, K) or int (N,), got {y.shape} {y.dtype}")


def read(path: Path, options: dict) -> list[RawSample]:
    z = load_npz(path)
    out: list[RawSample] = []
    for split in ("train", "test"):
        xk, yk = f"x_{split}", f"y_{split}"
        for k in (xk, yk):
            if k not in z:
                raise DataFormatError(path, f"field {k}", f"missing (keys present: {sorted(z)})")
        x = z[xk]
        if x.ndim != 3 or x.shape[2] != PERSONS * JOINTS * CHANNELS:
            raise DataFormatError(path, f"field {xk}", f"expected (N, T, {PERSONS * JOINTS * CHANNELS}), got {x.shape}")
        n, t = x.shape[:2]
        x5 = x.reshape(n, t, PERSONS, JOINTS, CHANNELS).transpose(0, 2, 1, 3, 4)  # (N, M, T, V, C)
        y = _labels(path, z[yk], yk)
        if y.shape[0] != n:
            raise DataFormatError(path, f"field {yk}", f"{y.shape[0]} labels for {n} samples")
        out += samples_from_arrays(path, x5, y, split=np.full(n, split), scale=unit_scale(options),
                                   prefix=f"{split}_")
    if center_option(options):
        center_samples(out, NTU25)
    return out


CTRGCN_NPZ_FORMAT = FormatSpec(
    name="ctrgcn-npz",
    list_inputs=list_inputs,
    read=read,
    dataset=lambda options, samples: "custom",
    layout=NTU25,
    num_classes=None,
    max_persons=PERSONS,
    option_names=frozenset({"units", "center"}),
)
