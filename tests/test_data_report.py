"""Length statistics, the suggested frame count and the data report of a prepared dataset (unit tier)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from macdiff_ray.data.lengths import length_stats, suggest_num_frames
from macdiff_ray.data.manifest import MANIFEST_NAME, load_manifest
from macdiff_ray.data.prepare import prepare_dataset
from macdiff_ray.data.report import build_report, format_report, sample_geometry


def test_length_stats_known_values():
    st = length_stats(list(range(1, 101)))  # 1..100
    assert (st["count"], st["min"], st["max"]) == (100, 1, 100)
    assert st["median"] == 50.5 and st["mean"] == 50.5
    assert st["p85"] == pytest.approx(85.15) and st["p95"] == pytest.approx(95.05)
    assert st["histogram"]["edges"][0] == 1 and sum(st["histogram"]["counts"]) == 100
    assert st["histogram"]["counts"][:2] == [15, 16]  # [1, 16) and [16, 32)
    assert length_stats([]) is None


def _manifest(dataset, p85, train_p85=None):
    st = {"p85": p85}
    return {"dataset": dataset, "lengths": {"all": st, "splits": {"b": {"train": {"p85": train_p85 or p85}}}}}


def test_suggest_num_frames_rounds_p85_up_to_patches_and_caps():
    assert suggest_num_frames(_manifest("ucla", 61.0)) == 64  # NW-UCLA's measured p85
    assert suggest_num_frames(_manifest("utk", 48.0)) == 48  # already a multiple of 4
    assert suggest_num_frames(_manifest("msr", 49.2)) == 52
    assert suggest_num_frames(_manifest("custom", 300.0)) == 120  # capped at the paper's 120
    assert suggest_num_frames(_manifest("custom", 1.0)) == 4  # at least one patch
    assert suggest_num_frames(_manifest("ucla", 61.0, train_p85=67.15), benchmark="b") == 68
    assert suggest_num_frames(_manifest("custom", 37.0), patch_len=8) == 40
    for ds in ("ntu60", "ntu120", "pku1", "pku2"):
        assert suggest_num_frames(_manifest(ds, 30.0)) == 120  # the paper's datasets keep 120
    with pytest.raises(ValueError, match="re-run prepare_data.py"):
        suggest_num_frames({"dataset": "ucla"})
    with pytest.raises(ValueError, match="no length statistics for benchmark 'x'"):
        suggest_num_frames(_manifest("ucla", 61.0), benchmark="x")


def _bodies(n=12, t=20, offset=(0.0, 0.0, 0.0), scale=1.0, seed=0):
    """``(n, t, 25, 3)`` standing stick figures (1.7 m tall, joints spread over the height), gently moving."""
    rng = np.random.default_rng(seed)
    base = np.stack([rng.uniform(-0.2, 0.2, 25), np.linspace(-0.9, 0.8, 25), rng.uniform(-0.1, 0.1, 25)], -1)
    base[1] = 0.0  # spine_mid (ntu25 centre joint) at the origin
    wobble = 0.02 * np.sin(np.linspace(0, 6, t))[None, :, None, None]
    x = base[None, None] + wobble + rng.normal(0, 0.005, (n, t, 25, 3))
    return ((x + np.asarray(offset)) * scale).astype(np.float32)


def _prepare(tmp_path, x, **kw):
    y = np.arange(len(x)) % 3
    np.savez(tmp_path / "d.npz", x=x, y=y, split=np.array(["train", "test"] * (len(x) // 2)))
    return prepare_dataset("arrays", tmp_path / "d.npz", tmp_path / "out", progress=False, **kw)


def test_manifest_records_lengths_fps_and_report(tmp_path):
    x = _bodies()
    x[:4, 15:] = 0.0  # four sequences of 15 valid frames (trailing zero padding)
    m = _prepare(tmp_path, x, center="false")
    a = m["lengths"]["all"]
    assert (a["min"], a["max"], a["count"]) == (15, 20, 12) and a["median"] == 20.0
    assert m["lengths"]["splits"]["custom"]["train"]["count"] == 6 and m["fps"] is None
    rep = m["report"]
    assert rep["warnings"] == [] and rep["position"]["median_m"] < 0.1
    assert 1.6 < rep["scale"]["body_size_median_m"] < 1.8
    text = format_report(m)
    assert "length (frames): min 15, median 20" in text and "frames per second: unknown" in text
    on_disk = json.loads((tmp_path / "out" / MANIFEST_NAME).read_text())
    assert on_disk["report"] == rep and on_disk["lengths"] == m["lengths"]


def test_report_warns_on_bodies_far_from_origin(tmp_path):
    m = _prepare(tmp_path, _bodies(offset=(0.3, 0.2, 2.8)), center="false")  # camera coordinates, 2.8 m away
    (w,) = m["report"]["warnings"]
    assert "far from the origin" in w and "2.8" in w
    assert m["report"]["position"]["median_m"] == pytest.approx(np.linalg.norm([0.3, 0.2, 2.8]), abs=0.05)


def test_report_warns_on_millimetres_read_as_metres(tmp_path):
    m = _prepare(tmp_path, _bodies(scale=1000.0), center="false")  # mm values, --units left at m
    ws = m["report"]["warnings"]
    assert any("larger than a person" in w and "--units mm" in w for w in ws), ws
    cm = build_report([0.0], [170.0], [20.0])["warnings"]
    assert len(cm) == 1 and "--units cm" in cm[0]
    (tmp_path / "mm").mkdir()
    ok = _prepare(tmp_path / "mm", _bodies(scale=1000.0), units="mm", center="false")
    assert ok["report"]["warnings"] == [] and ok["units"] == "m"
    assert "smaller than a person" in build_report([0.0], [0.05], [0.01])["warnings"][0]


def test_sample_geometry_uses_centre_joint_or_body_centre():
    x = np.zeros((1, 3, 4, 3), np.float32)
    x[0, :, :, 1] = [0.0, 1.0, 2.0, 3.0]  # joints stacked along y; frame-constant
    x[0, :, :, 2] = 2.0
    d_joint, size, bone = sample_geometry(x, bones=((1, 0), (2, 1), (3, 2)), center_joint=0)
    d_mean, _, no_bone = sample_geometry(x)
    assert d_joint == pytest.approx(2.0) and d_mean == pytest.approx(np.hypot(1.5, 2.0))
    assert size == pytest.approx(3.0) and bone == pytest.approx(1.0) and np.isnan(no_bone)


def test_old_manifest_without_new_keys_still_loads(tmp_path):
    _prepare(tmp_path, _bodies(), center="false")
    mp = tmp_path / "out" / MANIFEST_NAME
    m = json.loads(mp.read_text())
    for k in ("lengths", "fps", "report"):
        del m[k]
    mp.write_text(json.dumps(m))
    old = load_manifest(tmp_path / "out")
    assert format_report(old) == "data report:"
    with pytest.raises(ValueError, match="no length statistics"):
        suggest_num_frames(old)
