"""UTKinect-Action3D reader (real data, skipped where ../shared/data is absent) and its label-file parser."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_dataset
from macdiff_ray.data.benchmarks import read_split
from macdiff_ray.data.formats import get_format
from macdiff_ray.data.formats.utk import parse_labels
from macdiff_ray.data.prepare import prepare_dataset
from macdiff_ray.data.samples import DataFormatError

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def utk_prepared(tmp_path_factory):
    root = shared_dataset("utkinect_action3d")
    out = tmp_path_factory.mktemp("utk") / "prepared"
    return out, prepare_dataset("utk", root, out, progress=False)


def test_utk_prepares_199_segments_10_classes_xsub_split(utk_prepared):
    out, m = utk_prepared
    assert m["dataset"] == "utk" and m["num_samples"] == 199 and m["num_classes"] == 10
    assert m["layout"]["name"] == "kinect_v1_20" and len(m["class_names"]) == 10
    # odd subjects 1,3,5,7,9 x 2 recordings x 10 actions; s10_e02 carry (even subject) is the NaN segment
    assert m["split_counts"] == {"utk-xsub": {"train": 100, "test": 99}}
    (sk,) = m["skipped"]
    assert sk["input"].endswith("joints_s10_e02.txt#a05_s10_e02") and "NaN" in sk["reason"]
    train = read_split(out, "utk-xsub", "train", columns=["subject", "label"])
    test = read_split(out, "utk-xsub", "test", columns=["subject", "label"])
    assert set(train.column("subject").to_pylist()) == {1, 3, 5, 7, 9}
    assert set(test.column("subject").to_pylist()) == {2, 4, 6, 8, 10}
    assert sorted(set(train.column("label").to_pylist())) == list(range(10))


def test_utk_frames_by_range_duplicates_dropped_and_centred():
    root = shared_dataset("utkinect_action3d")
    fmt = get_format("utk")
    f = root / "joints" / "joints_s01_e01.txt"
    raw = {s.sample_id: s for s in fmt.read(f, {"center": False})}
    cen = {s.sample_id: s for s in fmt.read(f, {})}
    assert len(raw) == 10 and sorted(raw) == [f"a{a:02d}_s01_e01" for a in range(1, 11)]
    rows = [ln.split() for ln in f.read_text().splitlines() if ln.strip()]
    ids = [int(r[0]) for r in rows]
    walk = [i for i, fid in enumerate(ids) if 252 <= fid <= 390]  # PROVENANCE excerpt: walk 252 390
    keep = [i for i in walk if i == 0 or ids[i] != ids[i - 1]]
    w = raw["a01_s01_e01"]
    assert w.label == 0 and w.subject == 1 and w.replication == 1 and w.x.shape == (1, len(keep), 20, 3)
    np.testing.assert_allclose(w.x[0, 0].ravel(), [float(v) for v in rows[keep[0]][1:]], rtol=1e-6)
    np.testing.assert_allclose(w.x[0, -1].ravel(), [float(v) for v in rows[keep[-1]][1:]], rtol=1e-6)
    c = cen["a01_s01_e01"]
    np.testing.assert_allclose(c.x[0, 0, 1], 0.0, atol=1e-7)  # spine of frame 0 at the origin
    np.testing.assert_allclose(c.x - w.x, np.broadcast_to(-w.x[0, 0, 1], w.x.shape), atol=1e-6)
    assert np.linalg.norm(w.x[0, 0, 0]) > 1.5  # camera coordinates: about 2 m from the sensor


def test_utk_duplicate_ids_keep_first_row(tmp_path):
    root = shared_dataset("utkinect_action3d")
    (tmp_path / "joints").mkdir()
    (tmp_path / "actionLabel.txt").write_text((root / "actionLabel.txt").read_text())
    lines = (root / "joints" / "joints_s01_e01.txt").read_text().splitlines()
    i = next(k for k, ln in enumerate(lines) if ln.split()[0] == "252")
    dup = lines[i].split()
    dup[1] = "9.0"  # a second row with the same id and another x
    lines.insert(i + 1, " ".join(dup))
    (tmp_path / "joints" / "joints_s01_e01.txt").write_text("\n".join(lines) + "\n")
    (s,) = [s for s in get_format("utk").read(tmp_path / "joints" / "joints_s01_e01.txt", {"center": False})
            if s.sample_id == "a01_s01_e01"]
    assert s.x[0, 0, 0, 0] != pytest.approx(9.0) and not (s.x[..., 0] == 9.0).any()


def test_utk_label_file_errors_name_line(tmp_path):
    root = shared_dataset("utkinect_action3d")
    text = (root / "actionLabel.txt").read_text().splitlines()
    text[2] = "sitDown 572 686"  # no colon
    bad = tmp_path / "actionLabel.txt"
    bad.write_text("\n".join(text) + "\n")
    with pytest.raises(DataFormatError, match=r"actionLabel\.txt: line 3: expected '<action>: <start> <end>'"):
        parse_labels(bad)
    text[2] = "sitDown: 686 572"
    bad.write_text("\n".join(text) + "\n")
    with pytest.raises(DataFormatError, match="line 3: expected integer frame ids with start <= end"):
        parse_labels(bad)
