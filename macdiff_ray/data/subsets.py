"""Class-stratified labelled subsets for the semi-supervised protocol (paper Sec. 4.3; METHOD.md).

The released MacDiff code draws a uniform subset, a different one on every GPU rank. Ours is class-stratified
and a pure function of ``(labels, fraction, seed)``, so every worker computes the same rows.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["stratified_subset"]


def stratified_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Row indices of a class-stratified subset, sorted ascending.

    For each class ``c`` with ``n_c`` rows, ``k_c = max(1, round(fraction * n_c))`` rows are drawn without
    replacement (``round`` is Python's round-half-to-even on ``fraction * n_c``), so every class present keeps
    at least one labelled example and the total is within one row per class of ``fraction * N``.
    Classes are visited in ascending label order with one ``numpy.random.Generator(PCG64(seed))``, so the
    result depends only on the arguments (not on the worker, rank or process).

    Args:
        labels: int ``(N,)`` class of each row.
        fraction: in ``(0, 1]``.
        seed: non-negative int.
    Returns:
        int64 ``(K,)`` sorted row indices into ``labels``.
    """
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {y.dtype}")
    if not (isinstance(fraction, (int, float)) and 0.0 < float(fraction) <= 1.0 and math.isfinite(fraction)):
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    rng = np.random.Generator(np.random.PCG64(int(seed)))
    picked = []
    for c in np.unique(y):  # ascending class order: part of the determinism contract
        rows = np.flatnonzero(y == c)  # (n_c,)
        k = max(1, int(round(float(fraction) * rows.size)))
        picked.append(rng.choice(rows, size=k, replace=False))
    if not picked:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate(picked)).astype(np.int64)
