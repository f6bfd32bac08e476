"""Metrics for the generative tasks (paper Sec. 4.4, Tables 5 and 6).

* Motion reconstruction: :func:`mpjpe`, the mean per-joint position error, in the data's units, optionally over
  the occluded entries only; :func:`native_mpjpe`, the same on the data's own frames (a reconstruction at the
  model's T0 frames mapped back to the stored frame rate).
* Unconditional generation: :func:`fid`, :func:`kid`, :func:`diversity` and :func:`precision_recall`, computed
  on features ``(N, D)`` of an action classifier trained on the same data (METHOD.md "Generative tasks").

Everything here is a pure function of arrays: numpy arrays or torch tensors go in (moved to CPU and computed in
float64 numpy), Python floats come out. Random subsampling takes an explicit ``seed`` so that a figure can be
reproduced exactly. No scipy: the matrix square root in FID goes through symmetric eigendecompositions.
"""

from __future__ import annotations

from typing import Any, Tuple

import numpy as np

__all__ = [
    "mpjpe",
    "native_mpjpe",
    "fid",
    "kid",
    "diversity",
    "precision_recall",
    "generation_metrics",
]


def _as_float64(x: Any, name: str) -> np.ndarray:
    """numpy array or torch tensor -> float64 numpy array (a copy when the dtype changes)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor without importing torch here
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: contains NaN or inf values")
    return arr


def _as_bool(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype != np.bool_:
        raise ValueError(f"{name}: expected a bool mask, got dtype {arr.dtype}")
    return arr


def _features(x: Any, name: str, min_rows: int = 1) -> np.ndarray:
    """Validate a feature matrix: (N, D) float64 with N >= min_rows."""
    arr = _as_float64(x, name)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected features of shape (N, D), got shape {arr.shape}")
    if arr.shape[0] < min_rows:
        raise ValueError(f"{name}: needs at least {min_rows} rows, got {arr.shape[0]}")
    return arr


def _same_dim(a: np.ndarray, b: np.ndarray, na: str, nb: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{na} has feature size {a.shape[1]} but {nb} has {b.shape[1]}")


# ----------------------------------------------------------------------------------------------------------------
# Reconstruction
# ----------------------------------------------------------------------------------------------------------------


def mpjpe(pred: Any, target: Any, mask: Any = None, *, known_mask: Any = None) -> float:
    """Mean per-joint position error: mean over scored joints of ``||pred - target||_2`` over coordinates.

    Args:
        pred, target: ``(..., V, C)`` arrays or tensors of the same shape (e.g. ``(N, T, V, C)``), any units; the
            result is in the same units (metres for prepared data, normalised units for normalised batches).
        mask: optional bool, True = score this joint. Either per coordinate, ending in ``(V, C)`` or ``(V, 1)``
            (all C coordinates of a joint must agree), e.g. ``(T, V, C)`` from ``occlusion.py``; or per joint,
            ending in ``(V,)``, e.g. ``(N, T, V)``. Leading axes broadcast against ``pred.shape[:-2]``. For the
            occlusion task pass ``~known_mask`` or use ``known_mask=`` instead.
        known_mask: optional bool, the occlusion convention (True = known, see ``occlusion.py``); the error is
            taken over the *unknown* (occluded) joints only. Give at most one of ``mask`` / ``known_mask``.

    Returns:
        The mean error as a float. Raises ``ValueError`` if the mask selects no joint.
    """
    p = _as_float64(pred, "pred")
    t = _as_float64(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred shape {p.shape} != target shape {t.shape}")
    if p.ndim < 2:
        raise ValueError(f"pred/target: expected shape (..., V, C), got {p.shape}")
    if mask is not None and known_mask is not None:
        raise ValueError("give either mask (True = score) or known_mask (True = known), not both")
    err = np.linalg.norm(p - t, axis=-1)  # (..., V)
    if mask is None and known_mask is None:
        return float(err.mean())
    m = _as_bool(mask if mask is not None else known_mask, "mask" if mask is not None else "known_mask")
    if known_mask is not None:
        m = ~m
    if m.ndim >= 2 and m.shape[-2] == p.shape[-2] and m.shape[-1] in (1, p.shape[-1]):
        # Per-coordinate mask (..., V, C), as occlusion.py makes: a joint is scored when its coordinates agree.
        try:
            m_full = np.broadcast_to(m, p.shape)  # (..., V, C)
        except ValueError as e:
            raise ValueError(f"mask shape {m.shape} does not broadcast to pred shape {p.shape}") from e
        if not np.array_equal(m_full.all(axis=-1), m_full.any(axis=-1)):
            raise ValueError("mask: the C coordinates of one joint disagree (mask must be per joint)")
        m = m_full[..., 0]  # (..., V)
    elif m.ndim == 0 or m.shape[-1] not in (1, p.shape[-2]):
        raise ValueError(f"mask shape {m.shape}: expected (..., V) or (..., V, C) for pred shape {p.shape}")
    try:
        m = np.broadcast_to(m, err.shape)  # (..., V)
    except ValueError as e:
        raise ValueError(f"mask shape {m.shape} does not broadcast to the joint grid {err.shape}") from e
    n = int(m.sum())
    if n == 0:
        raise ValueError("mask selects no joint: MPJPE over an empty set is undefined")
    return float(err[m].sum() / n)


def native_mpjpe(rec: Any, known: Any, native: Any, start: Any, crop_len: Any) -> dict:
    """MPJPE at the data's own frame rate, for sequences the evaluation transform resampled to T0 frames.

    The transform read native frames ``[start, start + crop_len)`` and resized them linearly to T0
    (``data.transforms.crop_resize``, align_corners=False). Here each native frame i of that window is read back
    from the T0 reconstruction at position ``(i + 0.5) T0 / crop_len - 0.5`` (linear, clamped) and compared with
    the stored frame ``native[start + i]``. A native joint is scored when every T0 frame its read-back uses is
    occluded for that joint (so frames at the border of a gap, half known, are not).

    Args:
        rec: (P, T0, V, C) reconstruction in metres; known: (P, T0, V, C) bool, True = observed (``occlusion.py``);
        native: (P, T_max, V, C) stored coordinates in metres; start, crop_len: (P,) int windows.
    Returns:
        ``{"mpjpe": float (metres), "occluded_frames": mean over sequences of the native frames with every joint
        scored (the gap length in native frames), "scored_joints": int}``. Raises ``ValueError`` if nothing is
        scored.
    """
    rec = _as_float64(rec, "rec")
    known_b = _as_bool(known, "known")
    nat = _as_float64(native, "native")
    start = np.asarray(start, np.int64).reshape(-1)
    crop_len = np.asarray(crop_len, np.int64).reshape(-1)
    P, T0 = rec.shape[:2]
    if known_b.shape != rec.shape or nat.ndim != 4 or nat.shape[0] != P or nat.shape[2:] != rec.shape[2:]:
        raise ValueError(f"native_mpjpe: rec {rec.shape}, known {known_b.shape}, native {nat.shape} do not fit")
    if start.shape != (P,) or crop_len.shape != (P,) or (crop_len < 1).any() or (start + crop_len > nat.shape[1]).any():
        raise ValueError("native_mpjpe: start/crop_len must be (P,) windows inside the stored frames")
    occ = ~known_b.all(axis=-1)  # (P, T0, V) a joint counts as occluded when any coordinate is
    total, count, frames = 0.0, 0, []
    for p in range(P):
        L = int(crop_len[p])
        pos = np.clip((np.arange(L) + 0.5) * (T0 / L) - 0.5, 0.0, T0 - 1)  # (L,) read-back positions
        j0 = np.floor(pos).astype(np.int64)  # (L,)
        w = (pos - j0)[:, None, None]  # (L, 1, 1)
        j1 = np.minimum(j0 + 1, T0 - 1)  # (L,)
        back = rec[p, j0] * (1.0 - w) + rec[p, j1] * w  # (L, V, C)
        scored = occ[p, j0] & (occ[p, j1] | (w[:, :, 0] == 0))  # (L, V)
        err = np.linalg.norm(back - nat[p, start[p]:start[p] + L], axis=-1)  # (L, V)
        total += float(err[scored].sum())
        count += int(scored.sum())
        frames.append(int(scored.all(axis=1).sum()))
    if count == 0:
        raise ValueError("native_mpjpe: no native joint is occluded in every T0 frame it is read from")
    return {"mpjpe": total / count, "occluded_frames": float(np.mean(frames)), "scored_joints": count}


# ----------------------------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------------------------


def _psd_sqrt(c: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (D, D), negative round-off eigenvalues clipped."""
    c = 0.5 * (c + c.T)  # (D, D) enforce symmetry against round-off
    w, v = np.linalg.eigh(c)  # (D,), (D, D)
    w = np.clip(w, 0.0, None)
    return (v * np.sqrt(w)) @ v.T  # (D, D)


def _mean_cov(x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    mu = x.mean(axis=0)  # (D,)
    xc = x - mu  # (N, D)
    cov = xc.T @ xc / (x.shape[0] - 1)  # (D, D) unbiased, as np.cov
    return mu, cov


def fid(feats_a: Any, feats_b: Any) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (Heusel et al., 2017).

    ``||mu_a - mu_b||^2 + tr(C_a) + tr(C_b) - 2 tr((C_a C_b)^{1/2})``. The trace term is computed as
    ``tr((S C_b S)^{1/2})`` with ``S = C_a^{1/2}``: ``S C_b S`` is similar to ``C_a C_b`` (same eigenvalues) but
    symmetric PSD, so ``eigvalsh`` applies and no complex square roots or scipy are needed.

    Args:
        feats_a, feats_b: ``(N_a, D)`` and ``(N_b, D)``, N >= 2 each.

    Returns:
        The distance (>= 0; tiny negative round-off is clipped to 0).
    """
    a = _features(feats_a, "feats_a", min_rows=2)
    b = _features(feats_b, "feats_b", min_rows=2)
    _same_dim(a, b, "feats_a", "feats_b")
    mu_a, cov_a = _mean_cov(a)  # (D,), (D, D)
    mu_b, cov_b = _mean_cov(b)
    s = _psd_sqrt(cov_a)  # (D, D)
    m = s @ cov_b @ s  # (D, D)
    m = 0.5 * (m + m.T)
    tr_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh(m), 0.0, None)).sum())
    diff = mu_a - mu_b  # (D,)
    value = float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * tr_sqrt)
    return max(value, 0.0)


def _poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Cubic polynomial kernel ``(x.y / d + 1)^3``: (n, D), (m, D) -> (n, m)."""
    d = x.shape[1]
    return (x @ y.T / d + 1.0) ** 3


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 estimate between two samples of equal size m (Bińkowski et al., 2018, Eq. 3)."""
    m = x.shape[0]
    kxx = _poly_kernel(x, x)  # (m, m)
    kyy = _poly_kernel(y, y)  # (m, m)
    kxy = _poly_kernel(x, y)  # (m, m)
    sum_xx = kxx.sum() - np.trace(kxx)  # off-diagonal terms only: the unbiased U-statistic
    sum_yy = kyy.sum() - np.trace(kyy)
    return float(sum_xx / (m * (m - 1)) + sum_yy / (m * (m - 1)) - 2.0 * kxy.sum() / (m * m))


def kid(
    feats_a: Any,
    feats_b: Any,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> Tuple[float, float]:
    """Kernel Inception Distance: unbiased MMD^2 with the cubic kernel, averaged over random subsets.

    Each subset draws ``m = min(subset_size, N_a, N_b)`` rows of each set without replacement (fresh draws per
    subset, from ``numpy.random.default_rng(seed)``). The estimate is unbiased, so KID of a set against itself is
    close to 0 and may be slightly negative.

    Args:
        feats_a, feats_b: ``(N_a, D)``, ``(N_b, D)`` with ``min(N_a, N_b) >= 2``.
        num_subsets: number of subsets (100 in the released code).
        subset_size: rows per subset before capping at the set sizes.
        seed: subsampling seed.

    Returns:
        ``(mean, std)`` of the per-subset MMD^2 estimates.
    """
    if num_subsets < 1:
        raise ValueError(f"num_subsets must be >= 1, got {num_subsets}")
    if subset_size < 2:
        raise ValueError(f"subset_size must be >= 2, got {subset_size}")
    a = _features(feats_a, "feats_a", min_rows=2)
    b = _features(feats_b, "feats_b", min_rows=2)
    _same_dim(a, b, "feats_a", "feats_b")
    m = min(subset_size, a.shape[0], b.shape[0])
    rng = np.random.default_rng(seed)
    vals = np.empty(num_subsets, dtype=np.float64)
    for i in range(num_subsets):
        ia = rng.choice(a.shape[0], m, replace=False)  # (m,)
        ib = rng.choice(b.shape[0], m, replace=False)  # (m,)
        vals[i] = _mmd2_unbiased(a[ia], b[ib])
    return float(vals.mean()), float(vals.std())


def diversity(feats: Any, num_pairs: int = 200, seed: int = 0) -> float:
    """Mean Euclidean distance between ``num_pairs`` random pairs of distinct samples.

    Pairs ``(i, j)`` with ``i != j`` are drawn uniformly (``j = (i + U{1..N-1}) mod N``), so the value scales
    exactly with the features: ``diversity(s * X) == |s| * diversity(X)`` for the same seed.

    Args:
        feats: ``(N, D)`` with N >= 2.
        num_pairs: number of pairs (200 in the released code).
        seed: pair-sampling seed.
    """
    if num_pairs < 1:
        raise ValueError(f"num_pairs must be >= 1, got {num_pairs}")
    x = _features(feats, "feats", min_rows=2)
    n = x.shape[0]
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, size=num_pairs)  # (P,)
    j = (i + rng.integers(1, n, size=num_pairs)) % n  # (P,) never equal to i
    return float(np.linalg.norm(x[i] - x[j], axis=1).mean())


def _pairwise_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances (n, D), (m, D) -> (n, m) in float64, round-off negatives clipped."""
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)  # (n, m)
    return np.sqrt(np.clip(sq, 0.0, None))


def _knn_radii(x: np.ndarray, k: int, chunk: int) -> np.ndarray:
    """Distance from each row of x to its k-th nearest other row: (N, D) -> (N,)."""
    radii = np.empty(x.shape[0], dtype=np.float64)
    for s in range(0, x.shape[0], chunk):
        d = _pairwise_dist(x[s : s + chunk], x)  # (c, N)
        # Sorted position 0 is the point itself (distance 0), so position k is the k-th neighbour.
        radii[s : s + chunk] = np.partition(d, k, axis=1)[:, k]
    return radii


def _coverage(manifold: np.ndarray, radii: np.ndarray, queries: np.ndarray, chunk: int) -> float:
    """Fraction of query rows inside at least one ball (manifold[i], radii[i])."""
    inside = 0
    for s in range(0, queries.shape[0], chunk):
        d = _pairwise_dist(queries[s : s + chunk], manifold)  # (c, N)
        inside += int((d <= radii[None, :]).any(axis=1).sum())
    return inside / queries.shape[0]


def precision_recall(real: Any, fake: Any, k: int = 3, chunk: int = 1024) -> Tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al., 2019) with k-NN manifolds.

    Each set's manifold is the union of balls centred on its samples with radius the distance to the sample's
    k-th nearest neighbour in the same set. Precision = fraction of fake samples inside the real manifold;
    recall = fraction of real samples inside the fake manifold.

    Args:
        real: ``(N_r, D)``; fake: ``(N_f, D)``; both need more than ``k`` rows.
        k: neighbourhood size (3 in the released code).
        chunk: rows per block of the pairwise distance matrix (memory ``chunk * N * 8`` bytes).

    Returns:
        ``(precision, recall)``, each in [0, 1].
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    r = _features(real, "real", min_rows=k + 1)
    f = _features(fake, "fake", min_rows=k + 1)
    _same_dim(r, f, "real", "fake")
    radii_r = _knn_radii(r, k, chunk)  # (N_r,)
    radii_f = _knn_radii(f, k, chunk)  # (N_f,)
    precision = _coverage(r, radii_r, f, chunk)
    recall = _coverage(f, radii_f, r, chunk)
    return precision, recall


def generation_metrics(
    real: Any,
    fake: Any,
    *,
    seed: int = 0,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    diversity_pairs: int = 200,
    k: int = 3,
) -> dict:
    """All Table-6 metrics for one pair of feature sets ``real (N_r, D)`` and ``fake (N_f, D)``.

    Returns a dict of floats: ``fid``, ``kid_mean``, ``kid_std``, ``diversity_real``, ``diversity_fake``,
    ``precision``, ``recall``, ``num_real``, ``num_fake``.
    """
    r = _features(real, "real", min_rows=2)
    f = _features(fake, "fake", min_rows=2)
    kid_mean, kid_std = kid(r, f, num_subsets=kid_subsets, subset_size=kid_subset_size, seed=seed)
    precision, recall = precision_recall(r, f, k=k)
    return {
        "fid": fid(r, f),
        "kid_mean": kid_mean,
        "kid_std": kid_std,
        "diversity_real": diversity(r, diversity_pairs, seed),
        "diversity_fake": diversity(f, diversity_pairs, seed),
        "precision": precision,
        "recall": recall,
        "num_real": int(r.shape[0]),
        "num_fake": int(f.shape[0]),
    }
