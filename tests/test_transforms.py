"""Unit tests of the numpy training/evaluation transforms (no Ray, no real data)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from macdiff_ray.config import ConfigError
from macdiff_ray.data.transforms import (
    OUTPUT_KEYS,
    EvalTransform,
    NormStats,
    TrainTransform,
    crop_resize,
    crop_windows_center,
    crop_windows_random,
    decode_batch,
    rotation_matrices,
)

UNIT = {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
STATS = {"mean": [0.1, -0.2, 3.0], "std": [0.5, 0.8, 0.3]}


def make_batch(B=6, M=2, T=80, V=25, C=3, seed=0, min_len=1, num_persons=None):
    """Random skeletons, zero-padded past `length`, absent persons zero (persons stored first to last)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 0.5, size=(B, M, T, V, C)).astype(np.float32)
    length = rng.integers(min_len, T + 1, size=B).astype(np.int32)
    if num_persons is None:
        num_persons = rng.integers(1, M + 1, size=B)
    num_persons = np.asarray(num_persons, np.int8)
    x[np.broadcast_to(np.arange(T)[None, None, :] >= length[:, None, None], (B, M, T))] = 0.0
    x[np.arange(M)[None, :] >= num_persons[:, None]] = 0.0
    return {
        "sample_id": np.array([f"s{seed}_{i}" for i in range(B)], dtype=object),
        "x": x,
        "length": length,
        "num_persons": num_persons,
        "label": rng.integers(0, 10, size=B).astype(np.int32),
    }


def frame_index_batch(B=40, T=150, V=3, seed=1):
    """x[b, 0, t] = t in every coordinate for valid frames, -1000 past `length` (so leaks are visible)."""
    rng = np.random.default_rng(seed)
    length = rng.integers(1, T + 1, size=B).astype(np.int32)
    t = np.arange(T, dtype=np.float32)
    x = np.broadcast_to(t[None, None, :, None, None], (B, 1, T, V, 3)).copy()
    x[np.broadcast_to(np.arange(T)[None, None, :] >= length[:, None, None], (B, 1, T))] = -1000.0
    return {"x": x, "length": length, "num_persons": np.ones(B, np.int8), "label": np.zeros(B, np.int32)}


@pytest.mark.parametrize("V", [15, 20, 25])
@pytest.mark.parametrize("M", [1, 2])
def test_output_shapes_and_dtypes(V, M):
    batch = make_batch(B=5, M=M, V=V)
    for tf in (TrainTransform(STATS, num_frames=120, seed=3), EvalTransform(STATS, num_frames=120)):
        out = tf(batch)
        assert set(out) == set(OUTPUT_KEYS)
        assert out["x"].shape == (5, M, 120, V, 3) and out["x"].dtype == np.float32
        assert out["x_view"].shape == (5, M, 120, V, 3) and out["x_view"].dtype == np.float32
        assert out["label"].shape == (5,) and out["label"].dtype == np.int64
        assert out["person_valid"].shape == (5, M) and out["person_valid"].dtype == np.bool_
        np.testing.assert_array_equal(out["label"], batch["label"])
        assert np.isfinite(out["x"]).all() and np.isfinite(out["x_view"]).all()


def test_crop_resize_matches_torch_linear_interpolate():
    batch = make_batch(B=7, M=2, T=60, V=4, seed=5)
    start, crop_len = crop_windows_center(batch["length"], 0.95)
    out = crop_resize(batch["x"], start, crop_len, 120)
    for b in range(7):
        seg = torch.from_numpy(batch["x"][b, :, start[b] : start[b] + crop_len[b]])  # (M, L, V, C)
        seg = seg.permute(0, 2, 3, 1).reshape(1, -1, int(crop_len[b]))
        ref = torch.nn.functional.interpolate(seg, size=120, mode="linear", align_corners=False)
        ref = ref.reshape(2, 4, 3, 120).permute(0, 3, 1, 2).numpy()
        np.testing.assert_allclose(out[b], ref, atol=5e-5)


def test_eval_centre_crop_is_deterministic_and_known():
    batch = make_batch(B=8, M=2, T=90, V=20, seed=2)
    a = EvalTransform(STATS)(batch)
    b = EvalTransform(STATS)(batch)
    for k in OUTPUT_KEYS:
        np.testing.assert_array_equal(a[k], b[k])
    np.testing.assert_array_equal(a["x"], a["x_view"])
    # Known windows: bias = floor(0.05 * L / 2).
    start, crop_len = crop_windows_center(np.array([1, 40, 41, 100, 300]), 0.95)
    np.testing.assert_array_equal(start, [0, 1, 1, 2, 7])
    np.testing.assert_array_equal(crop_len, [1, 38, 39, 96, 286])


def test_random_windows_stay_in_valid_frames():
    rng = np.random.default_rng(0)
    length = rng.integers(1, 301, size=5000)
    p = rng.uniform(0.5, 1.0, size=5000)
    u = rng.random(5000)
    u[:3] = [0.0, 0.999999999, 1.0]
    start, crop_len = crop_windows_random(length, p, u, 64)
    assert (start >= 0).all() and (start + crop_len <= length).all()
    assert (crop_len >= np.minimum(64, length)).all() and (crop_len >= 1).all()
    long = length * p >= 64
    np.testing.assert_array_equal(crop_len[long], np.floor(length * p).astype(int)[long])
    assert len(np.unique(start[length > 200])) > 20  # starts really vary


def test_train_crop_never_reads_padding():
    batch = frame_index_batch()
    tf = TrainTransform(UNIT, rot=0.0, noise_std=0.0, seed=0)
    for _ in range(5):
        out = tf(batch)["x"][:, 0, :, 0, 0]  # (B, T0) frame positions
        length = batch["length"]
        assert (out >= 0).all() and (out <= (length - 1)[:, None] + 1e-4).all()
        span = out.max(1) - out.min(1)
        # The window covers at least min(64, L) frames (minus one edge frame lost to interpolation).
        assert (span >= np.minimum(64, length) * (1 - 1.0 / 120) - 1.0 - 1e-3).all()


def test_rotation_preserves_bone_lengths_and_changes_coordinates():
    batch = make_batch(B=6, M=2, T=70, V=20, seed=4)
    plain = TrainTransform(UNIT, rot=0.0, noise_std=0.0, seed=11)(batch)["x"]
    rotated = TrainTransform(UNIT, rot=0.3, noise_std=0.0, seed=11)(batch)["x"]
    assert not np.allclose(plain, rotated, atol=1e-3)

    def dists(x):  # all joint-pair distances, (B, M, T0, V, V)
        return np.linalg.norm(x[..., :, None, :] - x[..., None, :, :], axis=-1)

    np.testing.assert_allclose(dists(rotated), dists(plain), atol=1e-4)
    R = rotation_matrices(np.random.default_rng(0).uniform(-0.3, 0.3, size=(10, 3)))
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), (10, 3, 3)), atol=1e-6)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-6)
    # Known value: a quarter turn about z maps x to y.
    Rz = rotation_matrices(np.array([[0.0, 0.0, np.pi / 2]]))[0]
    np.testing.assert_allclose(Rz @ np.array([1.0, 0.0, 0.0]), [0.0, 1.0, 0.0], atol=1e-6)


def test_same_rotation_for_all_persons_and_for_view():
    batch = make_batch(B=4, M=2, T=50, V=15, seed=6, num_persons=[2, 2, 2, 2])
    batch["x"][:, 1] = batch["x"][:, 0]  # person 2 is a copy of person 1
    out = TrainTransform(UNIT, noise_std=0.0, seed=1)(batch)
    np.testing.assert_array_equal(out["x"][:, 0], out["x"][:, 1])
    np.testing.assert_array_equal(out["x"], out["x_view"])


def test_noise_only_on_view_and_present_persons():
    batch = make_batch(B=16, M=2, T=100, V=25, seed=7)
    std = np.asarray(STATS["std"], np.float32)
    noisy = TrainTransform(STATS, noise_std=0.005, seed=5)(batch)
    clean = TrainTransform(STATS, noise_std=0.0, seed=5)(batch)
    np.testing.assert_array_equal(noisy["x"], clean["x"])  # the diffusion target stays clean
    diff = (noisy["x_view"] - noisy["x"]) * std  # back to metres
    valid = noisy["person_valid"]
    present = diff[valid]
    assert abs(present.std() - 0.005) < 0.0002 and abs(present.mean()) < 0.0002
    assert (noisy["x_view"][~valid] == 0).all()


def test_normalisation_uses_the_stats():
    batch = make_batch(B=5, M=1, T=40, V=20, seed=8)
    raw = EvalTransform(UNIT)(batch)["x"]
    norm = EvalTransform(STATS)(batch)["x"]
    mean, std = np.asarray(STATS["mean"], np.float32), np.asarray(STATS["std"], np.float32)
    np.testing.assert_allclose(norm, (raw - mean) / std, rtol=1e-5, atol=1e-5)
    tr_raw = TrainTransform(UNIT, seed=2)(batch)
    tr_norm = TrainTransform(STATS, seed=2)(batch)
    np.testing.assert_allclose(tr_norm["x_view"], (tr_raw["x_view"] - mean) / std, rtol=1e-5, atol=1e-5)


def test_single_frame_sequences():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(3, 1, 1, 20, 3)).astype(np.float32)
    batch = {"x": x, "length": np.ones(3, np.int32), "label": np.arange(3), "num_persons": np.ones(3, np.int8)}
    for tf in (EvalTransform(UNIT), TrainTransform(UNIT, rot=0.0, noise_std=0.0)):
        out = tf(batch)["x"]
        assert out.shape == (3, 1, 120, 20, 3)
        np.testing.assert_allclose(out, np.broadcast_to(x, out.shape), atol=1e-6)


def test_absent_persons_are_zero():
    batch = make_batch(B=4, M=2, T=30, V=25, seed=10, num_persons=[1, 2, 1, 2])
    for tf in (TrainTransform(STATS, seed=0), EvalTransform(STATS)):
        out = tf(batch)
        np.testing.assert_array_equal(out["person_valid"], [[True, False], [True, True], [True, False], [True, True]])
        for key in ("x", "x_view"):
            assert (out[key][[0, 2], 1] == 0).all()
            assert (out[key][[1, 3], 1] != 0).any()
    first = EvalTransform(STATS, persons="first")(batch)
    assert first["x"].shape == (4, 1, 120, 25, 3) and first["person_valid"].all()


def test_person_mask_without_num_persons_column():
    batch = make_batch(B=4, M=2, T=30, V=25, seed=12, num_persons=[1, 2, 1, 2])
    del batch["num_persons"]
    out = EvalTransform(STATS)(batch)
    np.testing.assert_array_equal(out["person_valid"][:, 1], [False, True, False, True])


def test_seeded_reproducible_and_batches_differ():
    b1, b2 = make_batch(seed=1), make_batch(seed=2)
    t1, t2 = TrainTransform(STATS, seed=42), TrainTransform(STATS, seed=42)
    o1 = [t1(b1), t1(b2), t1(b1)]
    o2 = [t2(b1), t2(b2), t2(b1)]
    for a, b in zip(o1, o2):
        for k in OUTPUT_KEYS:
            np.testing.assert_array_equal(a[k], b[k])
    assert not np.allclose(o1[0]["x"], o1[2]["x"])  # the same batch a second time draws new augmentation
    assert not np.allclose(TrainTransform(STATS, seed=43)(b1)["x"], o1[0]["x"])
    assert not np.allclose(TrainTransform(STATS, seed=42, epoch=1)(b1)["x"], o1[0]["x"])
    np.testing.assert_array_equal(TrainTransform(STATS, seed=42, epoch=0)(b1)["x"], o1[0]["x"])
    # Same data under other sample ids (another Ray task's first batch) gets other draws.
    b1_other = dict(b1, sample_id=np.array([f"other{i}" for i in range(len(b1["label"]))], dtype=object))
    assert not np.allclose(TrainTransform(STATS, seed=42)(b1_other)["x"], o1[0]["x"])


def test_decode_batch_accepts_the_forms_ray_hands_over():
    batch = make_batch(B=3, M=2, T=7, V=5, seed=13)
    x = batch["x"]
    tensor_type = pa.fixed_shape_tensor(pa.float32(), list(x.shape[1:]))
    ext = pa.FixedShapeTensorArray.from_numpy_ndarray(x)
    assert ext.type == tensor_type
    nested = pa.array(x.ravel())
    for d in reversed(x.shape[1:]):
        nested = pa.FixedSizeListArray.from_arrays(nested, d)
    forms = {
        "ndarray": x,
        "object": np.array([r for r in x] + [None], dtype=object)[:-1],
        "fixed_shape_tensor": ext,
        "nested_fixed_size_list": nested,
        "chunked": pa.chunked_array([ext.slice(0, 1), ext.slice(1, 2)]),
        "table": pa.table({"x": ext, "length": pa.array(batch["length"]), "sample_id": pa.array(list(batch["sample_id"]))}),
    }
    for name, form in forms.items():
        data = decode_batch(form if name == "table" else {"x": form, "length": batch["length"]})
        assert data["x"].dtype == np.float32, name
        np.testing.assert_array_equal(data["x"], x, err_msg=name)
        np.testing.assert_array_equal(data["length"], batch["length"], err_msg=name)
    with pytest.raises(ValueError, match="must decode to"):
        decode_batch({"x": np.zeros((3, 4), np.float32)})


def test_invalid_arguments_raise():
    with pytest.raises(ConfigError, match="std"):
        NormStats(mean=(0.0, 0.0, 0.0), std=(1.0, 0.0, 1.0))
    with pytest.raises(ConfigError, match="same non-zero length"):
        NormStats(mean=(0.0, 0.0), std=(1.0, 1.0, 1.0))
    with pytest.raises(ConfigError, match="keys"):
        TrainTransform({"mean": [0, 0, 0], "std": [1, 1, 1], "extra": 1})
    with pytest.raises(ConfigError, match="crop_min"):
        TrainTransform(STATS, crop_min=0.9, crop_max=0.5)
    with pytest.raises(ConfigError, match="persons"):
        EvalTransform(STATS, persons="both")
    with pytest.raises(ConfigError, match="seed"):
        TrainTransform(STATS, seed=-1)
    with pytest.raises(ConfigError, match="crop"):
        EvalTransform(STATS, crop=0.0)
    batch = make_batch(B=2, T=10)
    batch["length"] = np.array([0, 5], np.int32)
    with pytest.raises(ValueError, match="length"):
        EvalTransform(STATS)(batch)
    with pytest.raises(ValueError, match="C=3"):
        EvalTransform({"mean": [0.0, 0.0], "std": [1.0, 1.0]})(make_batch(B=2))
    with pytest.raises(KeyError, match="label"):
        EvalTransform(STATS)({"x": make_batch(B=2)["x"], "length": np.array([3, 4])})


def test_crop_minimum_is_a_share_of_the_target_length_so_short_sequences_get_cropped():
    # Issue 14: with the paper's fixed 64-frame minimum a 30-frame sequence (NW-UCLA's median) was never cropped.
    from macdiff_ray.data.transforms import TrainTransformConfig, crop_windows_random

    assert TrainTransformConfig(num_frames=120).min_crop_frames == 64  # the paper's 64 of 120
    assert TrainTransformConfig(num_frames=32).min_crop_frames == 17
    assert TrainTransformConfig(num_frames=32, min_frames=64).min_crop_frames == 64  # explicit value wins
    rng = np.random.default_rng(0)
    length = np.full(2000, 30)
    p = rng.uniform(0.5, 1.0, 2000)
    _, new = crop_windows_random(length, p, rng.random(2000), TrainTransformConfig(num_frames=32).min_crop_frames)
    _, old = crop_windows_random(length, p, rng.random(2000), 64)
    assert (old == 30).all()  # the old rule: no crop at all
    assert new.min() == 17 and new.max() >= 29 and (new < 30).mean() > 0.8
