"""Sequence-length statistics of a prepared dataset, and the frame count they suggest.

``prepare_dataset`` stores ``manifest["lengths"]``: ``{"all": STATS, "splits": {benchmark: {"train": STATS,
"test": STATS}}}`` with ``STATS = {"count", "min", "median", "p85", "p95", "max", "mean", "histogram"}`` over
the valid frames of each sample (``histogram``: counts per bin of :data:`HIST_EDGES`, the last bin open), and
``manifest["fps"]``: the source frame rate where the dataset documents one (NTU/PKU 30, MSR Action3D 15), else
``None``.

Why a frame count per dataset: the paper resizes every crop to 120 frames (NTU, median about 70 frames at 30 fps).
NW-UCLA's median is 30 frames; resized to 120 it costs 4x the compute and the target becomes piecewise linear
(issue 14). :func:`suggest_num_frames` takes the 85th percentile length rounded up to a whole number of temporal
patches, capped at 120, and keeps the paper's 120 for NTU and PKU.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

__all__ = ["HIST_EDGES", "PAPER_NUM_FRAMES", "PAPER_DATASETS", "length_stats", "suggest_num_frames"]

HIST_EDGES: tuple[int, ...] = (1, 16, 32, 48, 64, 96, 120, 200, 300)  # bins [1,16), ..., [300, inf)
PAPER_NUM_FRAMES = 120  # T0 of the paper (METHOD.md "Tensors and tokens")
PAPER_DATASETS = frozenset({"ntu60", "ntu120", "pku1", "pku2"})  # the paper's datasets keep T0 = 120


def length_stats(lengths: Sequence[int] | np.ndarray) -> dict | None:
    """Summary of sequence lengths (frames); ``None`` for an empty list."""
    a = np.asarray(lengths, dtype=np.int64)
    if a.size == 0:
        return None
    hist = np.histogram(a, bins=list(HIST_EDGES) + [max(int(a.max()) + 1, HIST_EDGES[-1] + 1)])[0]
    return {
        "count": int(a.size),
        "min": int(a.min()),
        "median": float(np.median(a)),
        "p85": float(np.percentile(a, 85)),
        "p95": float(np.percentile(a, 95)),
        "max": int(a.max()),
        "mean": round(float(a.mean()), 3),
        "histogram": {"edges": list(HIST_EDGES), "counts": [int(c) for c in hist]},
    }


def suggest_num_frames(manifest: Mapping, *, benchmark: str | None = None, patch_len: int = 4,
                       cap: int = PAPER_NUM_FRAMES) -> int:
    """A frame count ``T0`` suited to a prepared dataset.

    NTU and PKU keep the paper's 120. Otherwise: the 85th percentile sequence length (of ``benchmark``'s
    training split if given, else of every sample), rounded up to a multiple of ``patch_len``, within
    ``[patch_len, cap]``. Raises ``ValueError`` for a manifest written before length statistics were recorded.
    """
    if patch_len < 1 or cap < patch_len:
        raise ValueError(f"need 1 <= patch_len <= cap, got patch_len={patch_len}, cap={cap}")
    if manifest["dataset"] in PAPER_DATASETS:
        return min(PAPER_NUM_FRAMES, cap - cap % patch_len)
    if "lengths" not in manifest:
        raise ValueError(f"manifest of dataset {manifest['dataset']!r} has no length statistics "
                         "(written by an older prepare_data.py); re-run prepare_data.py")
    if benchmark is None:
        st = manifest["lengths"]["all"]
    else:
        splits = manifest["lengths"]["splits"]
        if benchmark not in splits:
            raise ValueError(f"no length statistics for benchmark {benchmark!r}; known: {sorted(splits)}")
        st = splits[benchmark]["train"]
        if st is None:
            raise ValueError(f"benchmark {benchmark!r} has an empty training split")
    t = patch_len * math.ceil(st["p85"] / patch_len)
    return int(min(max(t, patch_len), cap - cap % patch_len))
