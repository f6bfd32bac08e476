"""Ray integration tests of the augmentation actor pool and the offline shards (macdiff_ray/augment).

Checkpoints are randomly initialised tiny models (``save_random_checkpoint``), never pretrained here.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from macdiff_ray.augment import (
    AugmentWorker,
    build_augmenter,
    epoch_chunk_seed,
    save_random_checkpoint,
    write_augmented_dataset,
)

T0 = 16


@pytest.fixture(scope="module")
def synth_ckpt(synthetic_prepared, tmp_path_factory):
    return save_random_checkpoint(synthetic_prepared, "synthetic", tmp_path_factory.mktemp("ckpt") / "c",
                                  num_frames=T0)


def _expected(aug, epoch: int) -> np.ndarray:
    """The epoch's samples computed in this process, chunk by chunk, with the pool's seeds."""
    w = AugmentWorker(_bundle(aug), aug.pool.t_start, aug.sources.stats, condition=aug.pool.condition,
                      train_transform=aug.sources.train_transform)
    rows = aug.plan(epoch)
    parts = [w.augment(aug.sources.x, aug.sources.person_valid, rows[a : a + aug.chunk_size],
                       epoch_chunk_seed(aug.seed, epoch, k), aug.sources.raw)
             for k, a in enumerate(range(0, len(rows), aug.chunk_size))]
    return np.concatenate(parts)


def _bundle(aug):
    import ray

    return ray.get(aug.pool._bundle_ref)


def test_pool_epochs_keep_labels_shapes_and_overlap(ray_session, synthetic_prepared, synth_ckpt):
    aug = build_augmenter(synth_ckpt, synthetic_prepared, "synthetic", t_start=300, ratio=1.5, num_actors=2,
                          seed=7, labeled_fraction=0.1, chunk_size=4)
    try:
        src = aug.sources
        assert len(src) == 12 and src.x.shape[1:] == (1, T0, 25, 3)  # 10% of 120, 2 per class of 6
        aug.prefetch(0)
        aug.prefetch(1)  # the next epoch is queued while "training" on this one
        out0, out1 = aug.collect(0), aug.collect(1)
        for e, out in ((0, out0), (1, out1)):
            rows = aug.plan(e)
            assert out["x"].shape == (18, 1, T0, 25, 3) and str(out["x"].dtype) == "torch.float32"
            assert out["label"].dtype.is_floating_point is False and str(out["label"].dtype) == "torch.int64"
            assert np.array_equal(out["label"].numpy(), src.label[rows])  # each keeps its source's label
            assert np.array_equal(out["person_valid"].numpy(), src.person_valid[rows])
            x = out["x"].numpy()
            assert np.isfinite(x).all()
            gap = np.sqrt(((x - src.x[rows]) ** 2).mean(axis=(1, 2, 3, 4)))  # (N_aug,) rms distance
            assert (gap > 0).all()
            np.testing.assert_allclose(x, _expected(aug, e), atol=1e-5)  # actors = in-process, same seeds
        assert not np.allclose(out0["x"].numpy(), out1["x"].numpy())  # fresh noise / sources every epoch
        assert set(aug.wait_log) == {0, 1} and aug.wait_seconds >= 0
        assert len(aug.pool.actors) == 2 and aug.pool.replacements == 0
    finally:
        aug.shutdown()


def test_pool_t_start_zero_returns_sources(ray_session, synthetic_prepared, synth_ckpt):
    aug = build_augmenter(synth_ckpt, synthetic_prepared, "synthetic", labeled_indices=[0, 5, 9], t_start=0,
                          ratio=2.0, num_actors=1, chunk_size=4, source_transform="eval")
    try:
        out = aug.collect(0)  # without prefetch: submitted and waited for here
        rows = aug.plan(0)
        assert np.array_equal(np.bincount(rows), [2, 2, 2])
        assert np.array_equal(out["x"].numpy(), aug.sources.x[rows])
    finally:
        aug.shutdown()


def test_pool_replaces_a_killed_actor_without_losing_samples(ray_session, synthetic_prepared, synth_ckpt):
    import ray

    aug = build_augmenter(synth_ckpt, synthetic_prepared, "synthetic", t_start=500, ratio=2.0, num_actors=2,
                          seed=3, chunk_size=2)
    try:
        aug.prefetch(0)
        aug.prefetch(1)
        first = [t for t in aug.pool._tasks if t.epoch == 0]
        ray.wait([first[0].ref], num_returns=1)  # the epoch is under way ...
        victim = aug.pool.actors[1]
        held = [t.ref for t in aug.pool._tasks if t.actor is victim]  # 120 chunks of 2 samples queued on it
        _, unfinished = ray.wait(held, num_returns=len(held), timeout=0)
        ray.kill(victim, no_restart=True)  # ... when one actor dies, with epoch-0 and epoch-1 chunks queued
        assert unfinished, "the victim had finished all its work before the kill: the test would prove nothing"
        out0 = aug.collect(0)
        out1 = aug.collect(1)
        assert aug.pool.replacements == 1 and aug.pool.actors[1] is not victim
        assert len({i["pid"] for i in aug.pool.actor_info()}) == 2  # both slots alive
        for e, out in ((0, out0), (1, out1)):
            assert out["x"].shape[0] == aug.num_per_epoch == 240
            assert np.array_equal(out["label"].numpy(), aug.sources.label[aug.plan(e)])
            np.testing.assert_allclose(out["x"].numpy(), _expected(aug, e), atol=1e-5)  # no chunk lost or changed
    finally:
        aug.shutdown()


def test_pool_replaces_a_hung_actor(ray_session, synthetic_prepared, synth_ckpt):
    """An actor that stops answering (SIGSTOP: alive to Ray, returning nothing) is replaced after
    ``hang_timeout_s`` and its chunks resent; before issue 13 ``ray.wait`` had no timeout and training hung."""
    import os
    import signal

    import ray

    aug = build_augmenter(synth_ckpt, synthetic_prepared, "synthetic", t_start=500, ratio=1.0, num_actors=2,
                          seed=4, chunk_size=8)
    try:
        # long enough for the healthy actor's chunks on a loaded 2-core box; a replacement's own start-up is not
        # counted (AugmentPool._replace waits for it to be up before its clock starts)
        aug.pool.hang_timeout_s = 15.0
        info = aug.pool.actor_info()
        victim = aug.pool.actors[1]
        os.kill(info[1]["pid"], signal.SIGSTOP)
        out = aug.collect(0)
        assert aug.pool.replacements == 1 and aug.pool.actors[1] is not victim
        assert out["x"].shape[0] == aug.num_per_epoch
        np.testing.assert_allclose(out["x"].numpy(), _expected(aug, 0), atol=1e-5)
        assert info[1]["pid"] not in {i["pid"] for i in aug.pool.actor_info()}
    finally:
        try:
            os.kill(info[1]["pid"], signal.SIGKILL)
        except ProcessLookupError:
            pass
        aug.shutdown()


def test_invalid_arguments_raise(ray_session, synthetic_prepared, synth_ckpt):
    from macdiff_ray.config import ConfigError

    with pytest.raises(ConfigError, match="t_start"):
        build_augmenter(synth_ckpt, synthetic_prepared, "synthetic", t_start=1000)
    with pytest.raises(ConfigError, match="labeled_indices"):
        build_augmenter(synth_ckpt, synthetic_prepared, "synthetic", labeled_indices=[0, 120])
    with pytest.raises(ConfigError, match="num_actors"):
        build_augmenter(synth_ckpt, synthetic_prepared, "synthetic", num_actors=0, labeled_indices=[0])
    with pytest.raises(ConfigError, match="aug-condition"):
        build_augmenter(synth_ckpt, synthetic_prepared, "synthetic", labeled_indices=[0], condition="zeroed")


def test_pool_full_condition_reaches_the_actors(ray_session, synthetic_prepared, synth_ckpt, caplog):
    """condition="full" (the paper's unmasked recipe) reaches the actors: the pool's samples equal the in-process
    full-condition worker's and differ from the default masked condition's. Choosing it warns."""
    kw = dict(t_start=300, ratio=1.0, num_actors=1, seed=3, labeled_fraction=0.1, chunk_size=4)
    with caplog.at_level(logging.WARNING, logger="macdiff_ray.augment.pool"):
        full = build_augmenter(synth_ckpt, synthetic_prepared, "synthetic", condition="full", **kw)
    assert [r for r in caplog.records if "condition 'full'" in r.getMessage()]
    try:
        x_full = full.collect(0)["x"].numpy()
        np.testing.assert_allclose(x_full, _expected(full, 0), atol=1e-5)
        bundle, sources = _bundle(full), full.sources
    finally:
        full.shutdown()
    w = AugmentWorker(bundle, 300, sources.stats)  # default condition: masked
    rows = full.plan(0)
    masked = np.concatenate([w.augment(sources.x, sources.person_valid, rows[a : a + 4], epoch_chunk_seed(3, 0, k))
                             for k, a in enumerate(range(0, len(rows), 4))])
    assert masked.shape == x_full.shape and not np.allclose(masked, x_full)


def _check_offline(out_dir, src_dir, benchmark, manifest, n_sources, epochs):
    from macdiff_ray.data.benchmarks import read_split
    from macdiff_ray.data.manifest import load_manifest
    from macdiff_ray.data.pipeline import iter_torch, make_dataset

    m = load_manifest(out_dir, verify_checksums=True)
    assert m == manifest and m["source_format"] == "augmented" and m["max_frames"] == T0
    assert m["augmentation"]["t_start"] == 300 and m["augmentation"]["num_sources"] == n_sources
    assert m["augmentation"]["condition"] == "masked"
    assert m["num_samples"] == epochs * n_sources and m["split_counts"][benchmark]["train"] == m["num_samples"]
    # labels kept: every augmented row carries its source row's label
    aug_t = read_split(out_dir, benchmark, "train", columns=["sample_id", "label"])
    src_t = read_split(src_dir, benchmark, "train", columns=["sample_id", "label"])
    src_label = dict(zip(src_t.column("sample_id").to_pylist(), src_t.column("label").to_pylist()))
    for sid, lab in zip(aug_t.column("sample_id").to_pylist(), aug_t.column("label").to_pylist()):
        assert src_label[sid.split("~aug")[0]] == lab
    # the data layer loads it like any prepared dataset
    ds = make_dataset(out_dir, benchmark, "train", train=True, num_frames=T0, materialize=True, data_num_cpus=0)
    n = 0
    for b in iter_torch(ds, batch_size=8, shuffle=False):
        assert b["x"].shape[1:] == (m["max_persons"], T0, m["num_joints"], 3)
        assert b["x"].isfinite().all()
        n += b["x"].shape[0]
    assert n == m["num_samples"]


def test_offline_shards_load_through_the_data_layer(ray_session, synthetic_prepared, synth_ckpt, tmp_path):
    out = tmp_path / "aug"
    manifest = write_augmented_dataset(synth_ckpt, synthetic_prepared, "synthetic", out, labeled_fraction=0.1,
                                       t_start=300, ratio=1.0, epochs=2, num_actors=2, chunk_size=4)
    _check_offline(out, synthetic_prepared, "synthetic", manifest, n_sources=12, epochs=2)
    with pytest.raises(FileExistsError):
        write_augmented_dataset(synth_ckpt, synthetic_prepared, "synthetic", out, labeled_fraction=0.1)


def test_offline_shards_real_ucla(ray_session, ucla_prepared, tmp_path):
    ckpt = save_random_checkpoint(ucla_prepared, "ucla-xview", tmp_path / "ckpt", num_frames=T0)
    out = tmp_path / "aug"
    manifest = write_augmented_dataset(ckpt, ucla_prepared, "ucla-xview", out, labeled_fraction=0.02,
                                       t_start=300, ratio=1.0, epochs=1, num_actors=1, chunk_size=16)
    n_src = manifest["augmentation"]["num_sources"]
    assert n_src >= 10  # at least one per class
    _check_offline(out, ucla_prepared, "ucla-xview", manifest, n_sources=n_src, epochs=1)


def test_sources_take_the_training_transform_per_chunk(synthetic_prepared, synth_ckpt):
    # Issue 14: augmentation sources are cropped and rotated like real training batches, afresh for every chunk
    # seed; "eval" keeps the old single centre-cropped pass.
    from macdiff_ray.augment.pool import load_sources, model_bundle
    from macdiff_ray.train.checkpoint import load_checkpoint

    src = load_sources(synthetic_prepared, "synthetic", num_frames=T0, labeled_fraction=0.1)
    old = load_sources(synthetic_prepared, "synthetic", num_frames=T0, labeled_fraction=0.1, source_transform="eval")
    assert old.raw is None and src.raw is not None and src.train_transform["num_frames"] == T0
    assert src.raw["x"].shape[0] == len(src) and np.array_equal(src.x, old.x)
    w = AugmentWorker(model_bundle(load_checkpoint(synth_ckpt)), 0, src.stats, train_transform=src.train_transform)
    rows = np.arange(4)
    a1 = w.augment(src.x, src.person_valid, rows, 11, src.raw)
    a2 = w.augment(src.x, src.person_valid, rows, 11, src.raw)
    b = w.augment(src.x, src.person_valid, rows, 12, src.raw)
    np.testing.assert_array_equal(a1, a2)  # seeded
    assert not np.allclose(a1, b)  # another seed, another crop and rotation
    # t_s = 0 is the identity denoise: the output is the training-transformed source itself, not the centre crop
    assert not np.allclose(a1, src.x[rows], atol=1e-3)
    plain = AugmentWorker(model_bundle(load_checkpoint(synth_ckpt)), 0, old.stats)
    np.testing.assert_allclose(plain.augment(old.x, old.person_valid, rows, 11), old.x[rows], atol=1e-5)
