"""Device-side batched transforms (data/device_transforms.py) against the numpy ones (data/transforms.py).

Draw for draw where the arithmetic is the same (windows, resize, rotation matrices, the whole evaluation
transform), and in distribution with fixed seeds where the random streams differ (crop-length law, start
fractions, rotation range, noise). Unit tier, CPU tensors; the last test streams decode-only batches from a
local Ray.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from macdiff_ray.data import device_transforms as D
from macdiff_ray.data import transforms as T

STATS = {"mean": [0.1, -0.2, 3.0], "std": [0.5, 0.7, 1.1]}
UNIT = {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on the shared 2-core box, spinning OpenMP threads slow small tensor ops down."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic sup |F_a - F_b|."""
    grid = np.union1d(a, b)
    fa = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    fb = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return float(np.abs(fa - fb).max())


def ks_bound(n: int, m: int, alpha_c: float = 1.95) -> float:
    """The KS critical value at alpha = 0.001 (c(alpha) = 1.95): exceeded by chance once in a thousand seeds."""
    return alpha_c * np.sqrt((n + m) / (n * m))


def raw_batch(B=64, M=2, T_max=300, V=25, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(B, M, T_max, V, 3)).astype(np.float32)
    length = rng.integers(1, T_max + 1, B)
    num_persons = rng.integers(1, M + 1, B)
    for b in range(B):
        x[b, :, length[b]:] = 0
        x[b, num_persons[b]:] = 0
    return {"x": x, "length": length, "label": np.arange(B) % 7, "num_persons": num_persons}


def as_torch(batch):
    return {k: torch.from_numpy(np.asarray(v)) for k, v in batch.items()}


# ------------------------------------------------------------------------------------- draw for draw
def test_windows_and_resize_equal_numpy_for_the_same_draws():
    batch = raw_batch()
    rng = np.random.default_rng(1)
    p, u = rng.uniform(0.5, 1.0, 64), rng.random(64)
    u[:3] = [0.0, 1.0, 0.999999]  # the edges of the start draw
    for min_frames in (1, 17, 64, 500):
        s_np, l_np = T.crop_windows_random(batch["length"], p, u, min_frames)
        s_t, l_t = D.crop_windows_random(torch.from_numpy(batch["length"]), torch.from_numpy(p), torch.from_numpy(u),
                                         min_frames)
        np.testing.assert_array_equal(s_t.numpy(), s_np)
        np.testing.assert_array_equal(l_t.numpy(), l_np)
        for T0 in (32, 120):
            np.testing.assert_array_equal(D.crop_resize(torch.from_numpy(batch["x"]), s_t, l_t, T0).numpy(),
                                          T.crop_resize(batch["x"], s_np, l_np, T0))
    c_np = T.crop_windows_center(batch["length"], 0.95)
    c_t = D.crop_windows_center(torch.from_numpy(batch["length"]), 0.95)
    for a, b in zip(c_t, c_np):
        np.testing.assert_array_equal(a.numpy(), b)


def test_rotation_equals_numpy_for_the_same_angles():
    angles = np.random.default_rng(2).uniform(-0.3, 0.3, (50, 3))
    r_np, r_t = T.rotation_matrices(angles), D.rotation_matrices(torch.from_numpy(angles))
    np.testing.assert_array_equal(r_t.numpy(), r_np)
    x = raw_batch(B=50)["x"][:, :, :40]
    np.testing.assert_allclose(D.rotate(torch.from_numpy(x), r_t).numpy(), T.rotate(x, r_np), atol=2e-6)


@pytest.mark.parametrize("persons", ["all", "first"])
def test_eval_transform_and_normalisation_equal_numpy_exactly(persons):
    batch = raw_batch()
    want = T.EvalTransform(STATS, num_frames=64, persons=persons)(batch)
    got = D.DeviceEvalTransform(STATS, num_frames=64, persons=persons)(as_torch(batch))
    assert set(got) == set(want) == set(T.OUTPUT_KEYS)
    for k in want:
        assert got[k].numpy().dtype == want[k].dtype and got[k].numpy().shape == want[k].shape, k
        np.testing.assert_array_equal(got[k].numpy(), want[k], err_msg=k)
    # without num_persons the person mask comes from the coordinates, as in numpy
    no_np = {k: v for k, v in batch.items() if k != "num_persons"}
    np.testing.assert_array_equal(D.DeviceEvalTransform(STATS, persons=persons)(as_torch(no_np))["person_valid"],
                                  T.EvalTransform(STATS, persons=persons)(no_np)["person_valid"])


@pytest.mark.parametrize("persons", ["all", "first"])
def test_train_transform_output_shapes_dtypes_and_absent_persons(persons):
    batch = raw_batch()
    want = T.TrainTransform(STATS, num_frames=48, persons=persons, seed=0)(batch)
    got = D.DeviceTrainTransform(STATS, num_frames=48, persons=persons, seed=0)(as_torch(batch))
    for k in want:
        assert got[k].numpy().dtype == want[k].dtype and tuple(got[k].shape) == want[k].shape, k
    np.testing.assert_array_equal(got["person_valid"].numpy(), want["person_valid"])
    absent = ~got["person_valid"]
    assert (got["x"][absent] == 0).all() and (got["x_view"][absent] == 0).all()


def test_train_transform_randomness_is_seeded_per_epoch_call_and_stream():
    batch = as_torch(raw_batch(B=8))
    a1 = D.DeviceTrainTransform(STATS, seed=3)
    a2 = D.DeviceTrainTransform(STATS, seed=3)
    first = a1(batch, epoch=0)["x_view"]
    torch.testing.assert_close(a2(batch, epoch=0)["x_view"], first, rtol=0, atol=0)  # same seed, same call
    assert not torch.equal(a1(batch, epoch=0)["x_view"], first)  # the next call draws anew
    assert not torch.equal(D.DeviceTrainTransform(STATS, seed=3)(batch, epoch=1)["x_view"], first)
    assert not torch.equal(D.DeviceTrainTransform(STATS, seed=3, stream=1)(batch, epoch=0)["x_view"], first)
    with pytest.raises(Exception, match="stream"):
        D.DeviceTrainTransform(STATS, stream=-1)


# ------------------------------------------------------------------------------------- in distribution
def frame_index_batch(lengths: np.ndarray, T_max: int = 300) -> dict:
    """One person, one joint whose 3 coordinates all hold frame index + 1 in the valid frames: after a crop and a
    linear resize, the first output frame is start + 1 and the last is start + crop_len whenever crop_len <= T0
    (upsampling: the source positions clamp to the window's ends)."""
    B = len(lengths)
    x = np.zeros((B, 1, T_max, 1, 3), np.float32)
    t = np.arange(T_max, dtype=np.float32)[None, :] + 1
    x[:, 0, :, 0, :] = np.where(np.arange(T_max)[None, :] < lengths[:, None], t, 0)[..., None]
    return {"x": x, "length": lengths, "label": np.zeros(B, np.int64), "num_persons": np.ones(B, np.int64)}


def windows_from_output(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    first, last = x[:, 0, 0, 0, 0], x[:, 0, -1, 0, 0]
    return np.rint(first - 1).astype(int), np.rint(last - first + 1).astype(int)


def test_same_crop_length_law_and_start_fractions():
    n, T0, L = 6000, 120, 100
    lengths = np.full(n, L)
    batch = frame_index_batch(lengths)
    kw = dict(num_frames=T0, rot=0.0, noise_std=0.0)
    s_np, l_np = windows_from_output(T.TrainTransform(UNIT, seed=11, **kw)(batch)["x"])
    s_t, l_t = windows_from_output(D.DeviceTrainTransform(UNIT, seed=11, **kw)(as_torch(batch))["x"].numpy())
    # the law: crop_len = clip(floor(L p), min(64, L), L), p ~ U[0.5, 1]: P(64) = (0.65 - 0.5) / 0.5 = 0.30 and
    # 0.02 for each of 65..99 (100 needs p = 1)
    for crop in (l_np, l_t):
        assert crop.min() == 64 and crop.max() == 99
        freq = np.bincount(crop, minlength=101)[64:100] / n
        assert abs(freq[0] - 0.30) < 0.03 and np.abs(freq[1:] - 0.02).max() < 0.012
    assert ks_statistic(l_np, l_t) < ks_bound(n, n)
    # start uniform on [0, L - crop_len]: the fraction (start + 0.5) / (L - crop_len + 1) is uniform on (0, 1)
    f_np, f_t = (s_np + 0.5) / (L - l_np + 1), (s_t + 0.5) / (L - l_t + 1)
    assert ((s_t >= 0) & (s_t + l_t <= L)).all()
    assert ks_statistic(f_np, f_t) < ks_bound(n, n)
    assert ks_statistic(f_t, np.random.default_rng(0).random(n)) < ks_bound(n, n)
    # short sequences: min(min_frames, length) keeps the whole of a sequence shorter than min_frames
    short = frame_index_batch(np.full(200, 30))
    assert (windows_from_output(D.DeviceTrainTransform(UNIT, seed=1, **kw)(as_torch(short))["x"].numpy())[1]
            == 30).all()


def test_same_crop_law_at_the_target_length_fraction():
    """min_frames defaults to round(64/120 * num_frames): 17 of 32 frames, the same rule on both sides."""
    n = 4000
    batch = frame_index_batch(np.full(n, 30))
    kw = dict(num_frames=32, rot=0.0, noise_std=0.0)
    _, l_np = windows_from_output(T.TrainTransform(UNIT, seed=5, **kw)(batch)["x"])
    _, l_t = windows_from_output(D.DeviceTrainTransform(UNIT, seed=5, **kw)(as_torch(batch))["x"].numpy())
    assert l_np.min() == l_t.min() == 17 and l_np.max() == l_t.max() == 29
    assert ks_statistic(l_np, l_t) < ks_bound(n, n)


def angles_from_output(x: np.ndarray) -> np.ndarray:
    """Joint v holds the unit vector e_v, so output joint v is column v of R = Rz(c) Ry(b) Rx(a)."""
    R = np.transpose(x[:, 0, 0], (0, 2, 1))  # (B, 3, 3): R[:, :, v] = output joint v
    b = -np.arcsin(np.clip(R[:, 2, 0], -1, 1))
    a = np.arctan2(R[:, 2, 1], R[:, 2, 2])
    c = np.arctan2(R[:, 1, 0], R[:, 0, 0])
    return np.stack([a, b, c], 1)  # (B, 3)


def test_same_rotation_range():
    n, rot = 5000, 0.3
    x = np.tile(np.eye(3, dtype=np.float32)[None, None, None], (n, 1, 8, 1, 1))  # (B, 1, 8, V=3, 3)
    batch = {"x": x, "length": np.full(n, 8), "label": np.zeros(n, np.int64), "num_persons": np.ones(n, np.int64)}
    kw = dict(num_frames=8, rot=rot, noise_std=0.0)
    a_np = angles_from_output(T.TrainTransform(UNIT, seed=2, **kw)(batch)["x"])
    a_t = angles_from_output(D.DeviceTrainTransform(UNIT, seed=2, **kw)(as_torch(batch))["x"].numpy())
    for a in (a_np, a_t):
        assert np.abs(a).max() <= rot + 1e-5
        assert (a.min(0) < -0.99 * rot).all() and (a.max(0) > 0.99 * rot).all()  # the whole range is reached
    for axis in range(3):
        assert ks_statistic(a_np[:, axis], a_t[:, axis]) < ks_bound(n, n), axis
        assert ks_statistic(a_t[:, axis], np.random.default_rng(axis).uniform(-rot, rot, n)) < ks_bound(n, n)


def test_same_noise_on_the_view_only():
    batch = raw_batch(B=256, T_max=64)
    out_np = T.TrainTransform(STATS, num_frames=64, seed=0)(batch)
    out_t = D.DeviceTrainTransform(STATS, num_frames=64, seed=0)(as_torch(batch))
    std = np.asarray(STATS["std"], np.float32)
    for out in (out_np, {k: v.numpy() for k, v in out_t.items()}):
        d = (out["x_view"] - out["x"]) * std  # metres
        valid = out["person_valid"]
        assert np.std(d[valid]) == pytest.approx(0.005, rel=0.02)
        assert (d[~valid] == 0).all()


# ------------------------------------------------------------------------------------- through Ray Data
@pytest.mark.ray
def test_decode_only_dataset_feeds_the_device_transform(ray_session, synthetic_prepared):
    from macdiff_ray.data.pipeline import dataset_stats, iter_torch, make_dataset

    ds = make_dataset(synthetic_prepared, "synthetic", "train", train=True, transform="decode", materialize=True,
                      data_num_cpus=0)
    batch = next(iter(iter_torch(ds, 16, shuffle=False)))
    assert set(batch) == set(D.DECODE_COLUMNS)  # the read tasks did no transform work
    assert batch["x"].ndim == 5 and batch["x"].dtype == torch.float32
    out = D.DeviceTrainTransform(dataset_stats(synthetic_prepared, "synthetic"), num_frames=32, seed=0)(batch)
    assert tuple(out["x"].shape[::2]) == (16, 32, 3) and out["x"].dtype == torch.float32
    assert torch.isfinite(out["x_view"]).all() and out["person_valid"].any(1).all()
