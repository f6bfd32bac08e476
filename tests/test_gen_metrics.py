"""Generative-task metrics (MPJPE, FID, KID, diversity, precision/recall) and occlusion masks / fill baselines."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from macdiff_ray.data.layouts import PART_NAMES, get_layout
from macdiff_ray.generate import metrics as gm
from macdiff_ray.generate import occlusion as occ


@pytest.fixture
def feats():
    return np.random.default_rng(0).normal(size=(400, 8))  # (N, D)


# ---------------------------------------------------------------------------------------------------------- MPJPE


def test_mpjpe_zero_and_constant_offset():
    x = np.random.default_rng(1).normal(size=(3, 10, 25, 3))
    assert gm.mpjpe(x, x) == 0.0
    # A 3-4-0 offset moves every joint by exactly 0.5.
    assert gm.mpjpe(x + np.array([0.3, 0.4, 0.0]), x) == pytest.approx(0.5, abs=1e-12)
    # torch input works and matches.
    assert gm.mpjpe(torch.tensor(x + 0.1), torch.tensor(x)) == pytest.approx(np.sqrt(3 * 0.01), abs=1e-9)


def test_mpjpe_only_over_occluded_entries():
    x = np.zeros((20, 25, 3))
    known = occ.frame_occlusion_mask(20, 25, 3, num_frames=5, start=7)  # (T, V, C)
    pred = x.copy()
    pred[~known] = 2.0  # occluded joints off by sqrt(3 * 4)
    pred[0, 0] = 100.0  # a known joint, must be ignored
    assert gm.mpjpe(pred, x, known_mask=known) == pytest.approx(np.sqrt(12.0))
    assert gm.mpjpe(pred, x, mask=~known) == pytest.approx(np.sqrt(12.0))
    assert gm.mpjpe(pred, x, mask=~known[..., 0]) == pytest.approx(np.sqrt(12.0))  # per-joint (T, V) mask
    # Batched prediction against a (T, V, C) mask broadcasts over the batch.
    assert gm.mpjpe(np.stack([pred, pred]), np.stack([x, x]), known_mask=known) == pytest.approx(np.sqrt(12.0))


def test_mpjpe_invalid_input():
    x = np.zeros((4, 25, 3))
    with pytest.raises(ValueError, match="shape"):
        gm.mpjpe(x, np.zeros((4, 20, 3)))
    with pytest.raises(ValueError, match="no joint"):
        gm.mpjpe(x, x, mask=np.zeros((4, 25), dtype=bool))
    with pytest.raises(ValueError, match="bool"):
        gm.mpjpe(x, x, mask=np.ones((4, 25)))
    with pytest.raises(ValueError, match="disagree"):
        m = np.ones((4, 25, 3), dtype=bool)
        m[0, 0, 1] = False
        gm.mpjpe(x, x, mask=m)
    with pytest.raises(ValueError, match="not both"):
        gm.mpjpe(x, x, mask=np.ones((4, 25), bool), known_mask=np.ones((4, 25), bool))
    with pytest.raises(ValueError, match="NaN"):
        gm.mpjpe(np.full((4, 25, 3), np.nan), x)


# ------------------------------------------------------------------------------------------------------------ FID


def test_fid_self_zero_and_grows_with_noise(feats):
    assert gm.fid(feats, feats) == pytest.approx(0.0, abs=1e-8)
    noise = np.random.default_rng(2).normal(size=feats.shape)
    values = [gm.fid(feats, feats + s * noise) for s in (0.1, 0.5, 1.0, 2.0)]
    assert all(a < b for a, b in zip(values, values[1:])), values
    assert values[0] > 0


def test_fid_known_value_and_symmetry():
    # Mean shift only: FID = ||delta||^2 exactly (identical covariances).
    a = np.random.default_rng(3).normal(size=(300, 5))
    delta = np.array([1.0, 2.0, 0.0, 0.0, -1.0])
    assert gm.fid(a, a + delta) == pytest.approx(6.0, rel=1e-9)
    # Scaled copy: covariances C and s^2 C -> tr(C)(1 - s)^2.
    cov_tr = np.trace(np.cov(a, rowvar=False))
    assert gm.fid(a, 3.0 * a - 2.0 * a.mean(0)) == pytest.approx(cov_tr * 4.0, rel=1e-8)
    b = np.random.default_rng(4).normal(size=(200, 5)) * 2.0
    assert gm.fid(a, b) == pytest.approx(gm.fid(b, a), rel=1e-8)


def test_fid_rank_deficient_covariance_is_finite():
    # Fewer samples than dimensions: singular covariances must not give NaN.
    a = np.random.default_rng(5).normal(size=(10, 32))
    v = gm.fid(a, a + 0.01)
    # Round-off in the square roots of (near-)zero eigenvalues limits accuracy to about sqrt(eps) * tr(C).
    assert np.isfinite(v) and v == pytest.approx(32 * 1e-4, abs=1e-5)


def test_feature_validation():
    with pytest.raises(ValueError, match="feature size"):
        gm.fid(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        gm.kid(np.zeros(5), np.zeros(5))
    with pytest.raises(ValueError, match="at least 4 rows"):
        gm.precision_recall(np.zeros((3, 2)), np.zeros((10, 2)), k=3)


# ------------------------------------------------------------------------------------------------------------ KID


def test_kid_same_distribution_near_zero_shift_positive():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(300, 8)), rng.normal(size=(300, 8))
    same_mean, same_std = gm.kid(a, b, num_subsets=20, subset_size=100, seed=0)
    shifted_mean, _ = gm.kid(a, b + 1.0, num_subsets=20, subset_size=100, seed=0)
    self_mean, _ = gm.kid(a, a, num_subsets=20, subset_size=100, seed=0)
    assert shifted_mean > 0.1
    assert abs(same_mean) < 0.05 * shifted_mean
    assert abs(self_mean) < 0.05 * shifted_mean
    assert same_std >= 0
    # Larger shift -> larger KID; same seed -> same value.
    assert gm.kid(a, b + 2.0, num_subsets=20, subset_size=100, seed=0)[0] > shifted_mean
    assert gm.kid(a, b, num_subsets=20, subset_size=100, seed=0) == (same_mean, same_std)


def test_kid_matches_direct_formula_single_subset():
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=(6, 3)), rng.normal(size=(6, 3)) + 0.3
    # subset_size == N: every subset is the whole set (a permutation), so the estimate is deterministic.
    k = lambda x, y: (x @ y.T / 3 + 1) ** 3  # noqa: E731
    m = 6
    expected = (
        (k(a, a).sum() - np.trace(k(a, a))) / (m * (m - 1))
        + (k(b, b).sum() - np.trace(k(b, b))) / (m * (m - 1))
        - 2 * k(a, b).mean()
    )
    mean, std = gm.kid(a, b, num_subsets=3, subset_size=6, seed=0)
    assert mean == pytest.approx(expected, rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-12)


# ------------------------------------------------------------------------------------------------------ diversity


def test_diversity_scales_linearly(feats):
    d1 = gm.diversity(feats, num_pairs=200, seed=0)
    assert d1 > 0
    assert gm.diversity(3.0 * feats, num_pairs=200, seed=0) == pytest.approx(3.0 * d1, rel=1e-12)
    # For standard normal features in D=8 the mean pair distance is close to E||z|| sqrt(2) ~ 3.9.
    assert 3.3 < d1 < 4.5
    assert gm.diversity(np.ones((10, 4))) == 0.0


# --------------------------------------------------------------------------------------------- precision / recall


def test_precision_recall_identical_and_disjoint(feats):
    assert gm.precision_recall(feats, feats, k=3) == (1.0, 1.0)
    assert gm.precision_recall(feats, feats + 100.0, k=3) == (0.0, 0.0)


def test_precision_recall_partial_overlap():
    rng = np.random.default_rng(8)
    real = rng.normal(size=(300, 4))
    fake = np.concatenate([rng.normal(size=(150, 4)), rng.normal(size=(150, 4)) + 50.0])
    p, r = gm.precision_recall(real, fake, k=3, chunk=64)
    # Half the fakes sit on the real manifold; the others are far away.
    assert 0.35 < p <= 0.5
    # The fake on-manifold half covers most real points.
    assert r > 0.6
    # Chunk size does not change the result.
    assert gm.precision_recall(real, fake, k=3, chunk=7) == (p, r)


def test_generation_metrics_keys(feats):
    out = gm.generation_metrics(feats[:200], feats[200:], kid_subsets=5, kid_subset_size=50)
    assert set(out) == {
        "fid", "kid_mean", "kid_std", "diversity_real", "diversity_fake", "precision", "recall", "num_real",
        "num_fake",
    }
    assert all(np.isfinite(v) for v in out.values())


# ---------------------------------------------------------------------------------------------------- occlusion


def test_frame_occlusion_mask():
    m = occ.frame_occlusion_mask(30, 25, 3, num_frames=10, start=5)
    assert m.shape == (30, 25, 3) and m.dtype == bool
    assert not m[5:15].any() and m[:5].all() and m[15:].all()
    with pytest.raises(ValueError, match="do not fit"):
        occ.frame_occlusion_mask(30, 25, 3, num_frames=10, start=25)


@pytest.mark.parametrize("num_frames", occ.OCCLUDED_FRAME_COUNTS)
def test_random_frame_masks_inside_valid_frames(num_frames):
    lengths = [120, 64, 40, 100]
    m = occ.random_frame_occlusion_masks(120, 20, 3, num_frames, lengths=lengths, seed=1)
    assert m.shape == (4, 120, 20, 3)
    occluded_frames = ~m.all(axis=(2, 3))  # (B, T)
    for b, n in enumerate(lengths):
        idx = np.flatnonzero(occluded_frames[b])
        assert len(idx) == num_frames
        assert np.all(np.diff(idx) == 1)  # consecutive
        assert idx[-1] < n  # inside the valid frames
        assert not m[b, idx].any()  # all joints, all coordinates of those frames
    # Seeded: same seed -> same masks; starts vary across samples/seeds.
    assert np.array_equal(m, occ.random_frame_occlusion_masks(120, 20, 3, num_frames, lengths=lengths, seed=1))
    many = occ.random_frame_occlusion_masks(120, 1, 1, num_frames, batch_size=50, seed=2)
    starts = np.argmin(many[:, :, 0, 0], axis=1)
    assert len(set(starts.tolist())) > 5


def test_random_frame_masks_too_short():
    with pytest.raises(ValueError, match="sample 1 has 5 valid frames"):
        occ.random_frame_occlusion_masks(50, 25, 3, 10, lengths=[50, 5])


@pytest.mark.parametrize("name", ["ntu25", "kinect_v1_20", "msr20"])
def test_part_occlusion_any_layout(name):
    layout = get_layout(name)
    V = layout.num_joints
    seen = set()
    for part in PART_NAMES:
        m = occ.part_occlusion_mask(layout, part, T=12, C=3, length=10)
        assert m.shape == (12, V, 3)
        hidden = np.flatnonzero(~m[0].all(axis=1))
        assert sorted(hidden.tolist()) == sorted(layout.parts[part])
        assert m[10:].all()  # padding stays known
        seen.update(hidden.tolist())
    # Default T=1 broadcasts over time; the dict form of the layout works too.
    assert occ.part_occlusion_mask(layout.to_dict(), "trunk").shape == (1, V, 3)
    with pytest.raises(ValueError, match="not one of"):
        occ.part_occlusion_mask(layout, "tail")
    masks, names = occ.random_part_occlusion_masks(layout, T=8, batch_size=30, seed=0)
    assert masks.shape == (30, 8, V, 3) and len(names) == 30 and set(names) <= set(PART_NAMES)
    for mk, nm in zip(masks, names):
        assert np.array_equal(mk, occ.part_occlusion_mask(layout, nm, T=8))


def test_linear_interpolation_fill():
    T = 11
    t = np.arange(T, dtype=np.float64)
    x = np.stack([2.0 * t + 1.0, -t, np.full(T, 5.0)], axis=-1)[:, None, :]  # (T, 1, 3) linear in time
    x = np.repeat(x, 2, axis=1)  # (T, 2, 3)
    known = occ.frame_occlusion_mask(T, 2, 3, num_frames=4, start=3)
    corrupted = np.where(known, x, 1e6)  # unknown values must never be read
    filled = occ.linear_interpolation_fill(corrupted, known)
    np.testing.assert_allclose(filled, x, atol=1e-12)  # exact for linear motion
    # Edges hold the nearest known value; a series with no known frame becomes 0.
    known2 = np.ones((T, 2, 3), dtype=bool)
    known2[:3, 0] = False
    known2[:, 1] = False
    f2 = occ.linear_interpolation_fill(np.where(known2, x, 1e6), known2)
    np.testing.assert_allclose(f2[:3, 0], np.broadcast_to(x[3, 0], (3, 3)))
    assert np.all(f2[:, 1] == 0)
    # Batched, torch in -> torch out with the same dtype.
    xt = torch.tensor(np.stack([x, 2 * x]), dtype=torch.float32)
    ft = occ.linear_interpolation_fill(xt, torch.tensor(known))
    assert isinstance(ft, torch.Tensor) and ft.dtype == torch.float32 and ft.shape == (2, T, 2, 3)
    torch.testing.assert_close(ft, xt)


def test_mean_pose_fill_and_compute_mean_pose():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(4, 6, 20, 3))
    x[1, 4:] = 0.0  # padding past length 4
    mp = occ.compute_mean_pose(x, lengths=[6, 4, 6, 6])
    expected = np.concatenate([x[0], x[1, :4], x[2], x[3]]).mean(axis=0)
    np.testing.assert_allclose(mp, expected)
    layout = get_layout("kinect_v1_20")
    known = occ.part_occlusion_mask(layout, "left_arm", T=6)
    filled = occ.mean_pose_fill(x, known, mp)
    arm = list(layout.parts["left_arm"])
    np.testing.assert_allclose(filled[:, :, arm], np.broadcast_to(mp[arm], (4, 6, 4, 3)))
    other = [v for v in range(20) if v not in arm]
    np.testing.assert_array_equal(filled[:, :, other], x[:, :, other])
    with pytest.raises(ValueError, match="bool"):
        occ.mean_pose_fill(x, known.astype(float), mp)


def test_native_mpjpe_reads_the_reconstruction_back_at_the_stored_frames():
    """A sequence linear in time, stored at 8 frames and resampled to T0 = 16 (crop_resize): T0 frames 4-11
    occluded cover native frames 2-5 (read back from T0 positions 2i + 0.5). A reconstruction 1 cm off on the gap
    scores exactly 1 cm on those 4 native frames; the truth scores 0."""
    from macdiff_ray.data.transforms import crop_resize

    t = np.arange(8, dtype=np.float64)[:, None, None]  # (8, 1, 1)
    native = (0.1 * t * np.ones((1, 2, 3)) + np.array([0.0, 1.0, 2.0])).astype(np.float32)[None]  # (1, 8, 2, 3)
    x0 = crop_resize(native[:, None], np.array([0]), np.array([8]), 16)[:, 0]  # (1, 16, 2, 3)
    known = np.ones_like(x0, dtype=bool)
    known[:, 4:12] = False
    truth = gm.native_mpjpe(x0, known, native, [0], [8])
    assert truth["mpjpe"] == pytest.approx(0.0, abs=1e-6) and truth["occluded_frames"] == 4.0
    off = x0.copy()
    off[:, 4:12, :, 0] += 0.01
    res = gm.native_mpjpe(off, known, native, [0], [8])
    assert res["mpjpe"] == pytest.approx(0.01, rel=1e-4) and res["scored_joints"] == 4 * 2
    with pytest.raises(ValueError, match="no native joint"):
        gm.native_mpjpe(x0, np.ones_like(known), native, [0], [8])
