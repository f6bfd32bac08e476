"""Local-Ray integration tests of the Ray Data pipeline (2 CPUs, one Ray for the whole pytest run)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from macdiff_ray.config import ConfigError
from macdiff_ray.data.pipeline import dataset_stats, iter_torch, make_dataset, select_split
from macdiff_ray.data.subsets import stratified_subset

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

M, T_MAX, V, C = 2, 24, 5, 3


@pytest.fixture(scope="module")
def tiny_prepared(tmp_path_factory):
    """A hand-made prepared dataset (``custom``): two shards of known arrays, written with the shard writer."""
    from macdiff_ray.data.manifest import sha256_file
    from macdiff_ray.data.samples import RawSample
    from macdiff_ray.data.shards import samples_to_table, write_shard

    rng = np.random.default_rng(0)
    samples = []
    for i in range(60):
        m, t = 1 + i % 2, 1 + int(rng.integers(0, T_MAX))
        x = rng.normal(0.0, 0.4, size=(m, t, V, C)).astype(np.float32)
        samples.append(RawSample(f"s{i:03d}", x, label=i % 4, subject=i % 7, split="train" if i % 3 else "test"))
    out = tmp_path_factory.mktemp("tiny") / "prepared"
    (out / "shards").mkdir(parents=True)
    shards = []
    for k, part in enumerate((samples[:35], samples[35:])):
        path = out / "shards" / f"part-{k:05d}.parquet"
        write_shard(samples_to_table(part, M, T_MAX, V, C), path)
        shards.append({"path": f"shards/{path.name}", "rows": len(part), "sha256": sha256_file(path)})
    n_train = sum(s.split == "train" for s in samples)
    manifest = {
        "schema_version": 1, "source_format": "test", "dataset": "custom", "layout": {}, "num_classes": 4,
        "max_persons": M, "max_frames": T_MAX, "num_joints": V, "channels": C, "units": "m",
        "num_samples": len(samples), "split_counts": {"custom": {"train": n_train, "test": len(samples) - n_train}},
        "stats": {"custom": {"mean": [0.0, 0.1, 0.2], "std": [0.4, 0.5, 0.6]}}, "shards": shards, "skipped": [],
        "created_by": "test",
    }
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out, {s.sample_id: s for s in samples}


def _collect_numpy(ds):
    rows: dict[str, list] = {}
    for batch in ds.iter_batches(batch_size=16, batch_format="numpy"):
        for k, v in batch.items():
            rows.setdefault(k, []).append(np.asarray(v))
    return {k: np.concatenate(v) for k, v in rows.items()}


def test_round_trip_gives_back_the_arrays(ray_session, tiny_prepared):
    data_dir, samples = tiny_prepared
    for split in ("train", "test"):
        ds = make_dataset(data_dir, "custom", split, train=False, transform=None)
        got = _collect_numpy(ds)
        expected = sorted(k for k, s in samples.items() if s.split == split)
        assert sorted(got["sample_id"].tolist()) == expected
        assert got["x"].shape == (len(expected), M, T_MAX, V, C) and got["x"].dtype == np.float32
        for i, sid in enumerate(got["sample_id"]):
            s = samples[sid]
            m, t = s.x.shape[:2]
            np.testing.assert_array_equal(got["x"][i, :m, :t], s.x)
            assert not got["x"][i, m:].any() and not got["x"][i, :, t:].any()  # zero padding
            assert got["length"][i] == t and got["num_persons"][i] == m and got["label"][i] == s.label


def test_transformed_batches_and_iter_torch_on_a_shard_iterator(ray_session, tiny_prepared):
    data_dir, samples = tiny_prepared
    n_train = sum(s.split == "train" for s in samples.values())
    ds = make_dataset(data_dir, "custom", "train", train=True, num_frames=16, seed=1)
    seen = 0
    for b in iter_torch(ds.iterator(), 8, shuffle=True, seed=0, drop_last=False):
        assert set(b) == {"x", "x_view", "label", "person_valid"}
        assert b["x"].dtype == torch.float32 and b["x"].shape[1:] == (M, 16, V, C)
        assert b["label"].dtype == torch.int64 and b["person_valid"].dtype == torch.bool
        assert (b["x"][~b["person_valid"]] == 0).all()
        assert not torch.equal(b["x"], b["x_view"])
        seen += len(b["label"])
    assert seen == n_train
    dropped = sum(len(b["label"]) for b in iter_torch(ds, 8, shuffle=False, drop_last=True))
    assert dropped == (n_train // 8) * 8


def test_split_counts_on_ucla(ray_session, ucla_prepared):
    for split, n in (("train", 1020), ("test", 464)):
        assert len(select_split(ucla_prepared, "ucla-xview", split)) == n
        assert make_dataset(ucla_prepared, "ucla-xview", split, train=False, transform=None).count() == n


def test_training_pipeline_on_ucla_yields_torch_batches(ray_session, ucla_prepared):
    stats = dataset_stats(ucla_prepared, "ucla-xview")
    assert len(stats.mean) == 3 and min(stats.std) > 0
    ds = make_dataset(ucla_prepared, "ucla-xview", "train", train=True, seed=0)
    n = 0
    for b in iter_torch(ds, 128, shuffle=True, seed=0, drop_last=True):
        assert b["x"].shape == (128, 1, 120, 20, 3) and b["x_view"].shape == (128, 1, 120, 20, 3)
        assert b["label"].shape == (128,) and b["person_valid"].shape == (128, 1)
        assert b["person_valid"].all() and 0 <= int(b["label"].min()) and int(b["label"].max()) <= 9
        # Normalised with the train statistics: roughly centred and unit scale per coordinate.
        assert float(b["x"].mean().abs()) < 1.0 and 0.2 < float(b["x"].std()) < 5.0
        n += 128
    assert n == (1020 // 128) * 128
    test = make_dataset(ucla_prepared, "ucla-xview", "test", train=False)
    total = sum(len(b["label"]) for b in iter_torch(test, 100, shuffle=False))
    assert total == 464


def test_labeled_subset_is_stratified_and_identical(ray_session, synthetic_prepared):
    full = select_split(synthetic_prepared, "synthetic", "train")
    keep = stratified_subset(full.labels, 0.1, 3)
    a = make_dataset(synthetic_prepared, "synthetic", "train", train=False, transform=None,
                     labeled_fraction=0.1, subset_seed=3)
    b = make_dataset(synthetic_prepared, "synthetic", "train", train=False, transform=None,
                     labeled_fraction=0.1, subset_seed=3)
    ids_a = sorted(_collect_numpy(a)["sample_id"].tolist())
    ids_b = sorted(_collect_numpy(b)["sample_id"].tolist())
    assert ids_a == ids_b == sorted(full.sample_ids[keep].tolist())
    labels = _collect_numpy(a)["label"]
    assert set(labels.tolist()) == set(full.labels.tolist())  # every class kept
    other = make_dataset(synthetic_prepared, "synthetic", "train", train=False, transform=None,
                         labeled_fraction=0.1, subset_seed=4)
    assert sorted(_collect_numpy(other)["sample_id"].tolist()) != ids_a


def _per_sample_signature(ds) -> list[float]:
    """Order-free fingerprint of one pass: the sorted per-sample sums of x."""
    sums = [b["x"].double().sum(dim=(1, 2, 3, 4)) for b in iter_torch(ds, 32, shuffle=False)]
    return sorted(torch.cat(sums).tolist())


def test_augmentation_fresh_each_pass_and_seeded(ray_session, tiny_prepared):
    data_dir, _ = tiny_prepared
    build = lambda seed: make_dataset(data_dir, "custom", "train", train=True, num_frames=16, seed=seed,  # noqa: E731
                                      materialize=True)
    ds = build(7)
    first, second = _per_sample_signature(ds), _per_sample_signature(ds)
    assert first != second  # new crops/angles/noise on the second pass, not a frozen copy
    again = build(7)
    np.testing.assert_allclose(_per_sample_signature(again), first, rtol=1e-6)  # same seed, same first pass
    assert _per_sample_signature(build(8)) != first
    evald = make_dataset(data_dir, "custom", "train", train=False, num_frames=16, materialize=True)
    assert _per_sample_signature(evald) == _per_sample_signature(evald)  # evaluation is deterministic


def test_invalid_requests_raise(ray_session, tiny_prepared, tmp_path):
    import shutil

    data_dir, _ = tiny_prepared
    with pytest.raises(ConfigError, match="does not serve benchmark"):
        make_dataset(data_dir, "ucla-xview", "train", train=True)
    with pytest.raises(ConfigError, match="split"):
        make_dataset(data_dir, "custom", "val", train=True)
    with pytest.raises(ConfigError, match="labeled_fraction"):
        make_dataset(data_dir, "custom", "train", train=True, labeled_fraction=1.5)
    with pytest.raises(ConfigError, match="persons"):
        make_dataset(data_dir, "custom", "train", train=True, persons="second")
    no_stats = tmp_path / "no_stats"
    shutil.copytree(data_dir, no_stats)
    manifest = json.loads((no_stats / "manifest.json").read_text())
    manifest["stats"] = {}
    (no_stats / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="no stats for benchmark 'custom'"):
        dataset_stats(no_stats, "custom")
    with pytest.raises(ConfigError, match="no stats"):
        make_dataset(no_stats, "custom", "train", train=True)
