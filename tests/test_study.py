"""The learning-study command (issue 14): its smoke test produces every row, and its in-memory data path."""

from __future__ import annotations

import json

import numpy as np
import pytest

from macdiff_ray.config import ConfigError, from_dict
from macdiff_ray.eval.study import ROWS, StudyConfig, aug_ratio, run_study, smoke_overrides


def test_study_config_is_strict_and_lambda_follows_method():
    with pytest.raises(ConfigError, match="rows"):
        from_dict(StudyConfig, {"rows": ["probe", "nonsense"]})
    with pytest.raises(ConfigError, match="seeds"):
        from_dict(StudyConfig, {"seeds": []})
    assert aug_ratio(0.1) == 0.25 and aug_ratio(0.01) == 2.0 and aug_ratio(0.05) == 0.5
    assert from_dict(StudyConfig, {"aug_t_start": 300}).aug_t_starts == (300,)
    assert from_dict(StudyConfig, {"aug_t_start": [100, 500]}).aug_t_starts == (100, 500)
    for bad in (0, 1000, [200, 200], []):
        with pytest.raises(ConfigError, match="aug_t_start"):
            from_dict(StudyConfig, {"aug_t_start": bad})
    assert StudyConfig().probe_cache_views == 16 and from_dict(StudyConfig, {"probe_cache_views": 0})
    with pytest.raises(ConfigError, match="probe_cache_views"):
        from_dict(StudyConfig, {"probe_cache_views": -1})


def test_in_memory_split_matches_the_ray_pipeline_rows(synthetic_prepared):
    from macdiff_ray.data.pipeline import make_memory_dataset, select_split

    ev = make_memory_dataset(synthetic_prepared, "synthetic", "test", train=False, num_frames=32)
    sel = select_split(synthetic_prepared, "synthetic", "test")
    assert ev.count() == len(sel)
    batches = list(ev.iter_batches(batch_size=16))
    assert sum(len(b["label"]) for b in batches) == len(sel)
    assert batches[0]["x"].shape[1:] == (1, 32, 25, 3) and batches[0]["x"].dtype == np.float32
    again = list(ev.iter_batches(batch_size=16))
    np.testing.assert_array_equal(batches[0]["x"], again[0]["x"])  # evaluation: deterministic
    tr = make_memory_dataset(synthetic_prepared, "synthetic", "train", train=True, num_frames=32, seed=0)
    a = list(tr.iter_batches(batch_size=8, drop_last=True, local_shuffle_buffer_size=64, local_shuffle_seed=1))
    b = list(tr.iter_batches(batch_size=8, drop_last=True, local_shuffle_buffer_size=64, local_shuffle_seed=1))
    assert all(len(x["label"]) == 8 for x in a)
    np.testing.assert_array_equal(a[0]["label"], b[0]["label"])  # same shuffle seed, same order ...
    assert not np.allclose(a[0]["x"], b[0]["x"])  # ... but a new pass draws new crops and rotations


@pytest.mark.ray
def test_study_smoke_produces_every_row(ray_session, synthetic_prepared, tmp_path):
    cfg = from_dict(StudyConfig, dict(smoke_overrides(), data_dir=str(synthetic_prepared), benchmark="synthetic",
                                      output=str(tmp_path / "study"), use_gpu="no", aug_t_start=[500, 100]))
    res = run_study(cfg)
    names = [r["row"] for r in res["rows"]]
    # "semi" is, per fraction, the pretrained and from-scratch rows and one augmented row per t_s
    expected = len(ROWS) - 1 + (2 + len(cfg.aug_t_starts)) * len(cfg.semi_fractions)
    assert len(names) == expected and len(set(names)) == expected
    for r in res["rows"]:
        assert 0.0 <= r["top1_last"] <= 1.0
        if r.get("protocol") != "knn" and r.get("protocol") != "1nn-raw":
            assert r["num_seeds"] == 2 and "top1_last_std" in r
    md = (tmp_path / "study" / "study.md").read_text()
    assert all(n in md for n in names)
    assert sum("diffusion augmentation (t_s 100," in n for n in names) == len(cfg.semi_fractions)
    assert (tmp_path / "study" / "curves.png").stat().st_size > 1000
    # the probes encode the study's number of augmented views, not the probe's own default
    probe_run = json.loads((tmp_path / "study" / "rows" / "probe" / "seed_0" / "results.json").read_text())
    assert probe_run["feature_cache_views"] == cfg.probe_cache_views == 2
    saved = json.loads((tmp_path / "study" / "study.json").read_text())
    assert saved["num_frames"] == 32 and saved["pretrain"]["final_epoch"] >= 1
    # resumable: a second run finds every row done and trains nothing
    again = run_study(cfg)
    assert [r["row"] for r in again["rows"]] == names
    assert [r["top1_last"] for r in again["rows"]] == [r["top1_last"] for r in res["rows"]]


def test_fit_batch_keeps_steps_per_epoch_on_small_splits():
    from macdiff_ray.eval.study import fit_batch

    assert fit_batch(1020) == 64  # NW-UCLA: 15 steps
    assert fit_batch(100) == 8  # UTKinect: 12 steps, not one step of 64
    assert fit_batch(280) == 32
    assert fit_batch(102) == 8  # 10% of NW-UCLA
    assert fit_batch(20) == 8  # floor
    for n in (64, 100, 500, 5000):
        b = fit_batch(n)
        assert b in (8, 16, 32, 64) and (n // b >= 8 or b == 8)


def test_curves_png_without_a_probe_curve_draws_no_empty_legend(tmp_path):
    """A study run with curve_points 0 and no random-init row still writes curves.png, and without matplotlib's
    "No artists with labels" warning: the empty panel says why it is empty."""
    import warnings

    from macdiff_ray.eval.study import _plot

    history = [{"epoch": e, "loss": 1.0 / e} for e in range(1, 6)]
    out = tmp_path / "curves.png"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _plot(str(out), history, [], None, "no curve")
    assert out.is_file() and out.stat().st_size > 1000
    assert not [w for w in caught if "legend" in str(w.message)], [str(w.message) for w in caught]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _plot(str(tmp_path / "c2.png"), history, [{"epoch": 5, "top1_last": 0.5}], 0.2, "with curve")
    assert not [w for w in caught if "legend" in str(w.message)]


def test_probe_curve_is_labelled_with_the_seed_it_ran(tmp_path, monkeypatch):
    import macdiff_ray.eval.study as study

    for epoch in (5, 10, 15):
        (tmp_path / "run" / "checkpoints" / f"epoch_{epoch:05d}").mkdir(parents=True)
        (tmp_path / "run" / "checkpoints" / f"epoch_{epoch:05d}" / "checkpoint.pt").write_bytes(b"x")
    ran = []

    def fake_probe(cfg, name, num_frames, seeds, **kw):
        ran.append((name, list(seeds), kw["checkpoint"]))
        return {"top1_last": 0.5}

    monkeypatch.setattr(study, "_seeded_probe", fake_probe)
    cfg = from_dict(StudyConfig, dict(data_dir=str(tmp_path), benchmark="synthetic", output=str(tmp_path / "o"),
                                      seeds=[3, 5], curve_points=2))
    curve = study._curve(cfg, str(tmp_path / "run"), 32)
    assert [p["epoch"] for p in curve] == [5, 15] and {p["seed"] for p in curve} == {3}
    assert [r[:2] for r in ran] == [("curve/epoch_00005", [3]), ("curve/epoch_00015", [3])]
