"""Bring-your-own data: the ``arrays`` format centres by default and reads a layout JSON strictly (unit tier)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from macdiff_ray.data.formats import get_format
from macdiff_ray.data.layouts import PART_NAMES, load_layout_json
from macdiff_ray.data.prepare import prepare_dataset
from macdiff_ray.data.samples import DataFormatError

# A 5-joint toy skeleton: pelvis (root) -> spine -> head, pelvis -> left foot, pelvis -> right foot.
LAYOUT = {"name": "toy5", "joint_names": ["pelvis", "spine", "head", "lfoot", "rfoot"],
          "parents": [-1, 0, 1, 0, 0], "root": "pelvis",
          "parts": {"trunk": ["pelvis", "spine", "head"], "left_leg": [3], "right_leg": ["rfoot"]}}


def _camera_data(tmp_path, v=5, n=4, t=9, lead=0):
    """``(n, t, v, 3)`` bodies about 2.8 m from the camera, in mm; the first ``lead`` frames are empty."""
    rng = np.random.default_rng(0)
    x = rng.normal(0, 200.0, (n, t, v, 3)) + np.array([300.0, -200.0, 2800.0])
    x[:, :lead] = 0.0
    np.savez(tmp_path / "d.npz", x=x.astype(np.float32), y=np.arange(n) % 2)
    return x / 1000.0


def _write(tmp_path, obj, name="layout.json"):
    p = tmp_path / name
    p.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)
    return p


def test_arrays_centres_on_the_layout_root_by_default(tmp_path):
    x = _camera_data(tmp_path, lead=2)
    lay = _write(tmp_path, LAYOUT)
    fmt = get_format("arrays")
    opts = {"units": "mm", "layout": str(lay)}
    cen = fmt.read(tmp_path / "d.npz", opts)
    raw = fmt.read(tmp_path / "d.npz", {**opts, "center": "false"})
    for s, r, xi in zip(cen, raw, x):
        np.testing.assert_allclose(r.x[0], xi, atol=1e-5)  # center=false keeps camera coordinates
        np.testing.assert_allclose(s.x[0, 2, 0], 0.0, atol=1e-6)  # pelvis of the first tracked frame at 0
        assert (s.x[0, :2] == 0).all()  # empty leading frames stay empty (not data)
        np.testing.assert_allclose(s.x[0, 2:] - r.x[0, 2:], np.broadcast_to(-r.x[0, 2, 0], r.x[0, 2:].shape),
                                   atol=1e-5)  # a pure translation
    assert fmt.layout_for(opts, cen).center_joint == 0


def test_arrays_without_layout_centres_on_the_body_centre(tmp_path):
    x = _camera_data(tmp_path, v=15)  # 15 joints: a generic layout, no tree, no root
    (s, *_) = get_format("arrays").read(tmp_path / "d.npz", {"units": "mm"})
    np.testing.assert_allclose(s.x[0, 0].mean(axis=0), 0.0, atol=1e-5)  # mean of the joints of frame 0
    assert np.linalg.norm(x[0, 0].mean(axis=0)) > 2.5


def test_prepare_arrays_default_is_centred_and_report_is_quiet(tmp_path):
    _camera_data(tmp_path, v=15, n=6)
    m = prepare_dataset("arrays", tmp_path / "d.npz", tmp_path / "c", units="mm", progress=False)
    assert m["report"]["position"]["median_m"] < 0.5 and m["report"]["warnings"] == []
    raw = prepare_dataset("arrays", tmp_path / "d.npz", tmp_path / "r", units="mm", progress=False, center="false")
    assert any("far from the origin" in w for w in raw["report"]["warnings"])


def test_layout_json_round_trip_and_parts(tmp_path):
    lay = load_layout_json(_write(tmp_path, LAYOUT))
    assert lay.name == "toy5" and lay.center_joint == 0 and lay.bones == ((1, 0), (2, 1), (3, 0), (4, 0))
    assert lay.parts["trunk"] == (0, 1, 2) and lay.parts["right_leg"] == (4,) and lay.parts["left_arm"] == ()
    minimal = {k: LAYOUT[k] for k in ("joint_names", "parents", "root")}
    m = load_layout_json(_write(tmp_path, minimal, "my_rig.json"))
    assert m.name == "my_rig" and m.parts["trunk"] == tuple(range(5)) and set(m.parts) == set(PART_NAMES)


@pytest.mark.parametrize(
    "edit,where,msg",
    [
        (lambda d: d.update(roots="pelvis"), "field roots", "unknown key"),
        (lambda d: d.pop("root"), "field root", "missing"),
        (lambda d: d.update(root="tail"), "field root", "unknown joint name 'tail'"),
        (lambda d: d.update(root=7), "field root", r"joint index in \[0, 5\)"),
        (lambda d: d.update(parents=[-1, 0, 1, 0]), "field parents", "list of 5 integers"),
        (lambda d: d.update(parents=[-1, 0, 1, 0, 9]), r"field parents\[4\]", "not -1 or the index"),
        (lambda d: d.update(parents=[-1, 0, 1, 0, "0"]), r"field parents\[4\]", "not -1 or the index"),
        (lambda d: d.update(parents=[-1, 2, 1, 0, 0]), "field parents", "cycle"),
        (lambda d: d.update(joint_names=["a", "b", "a", "c", "d"]), "field joint_names", "'a' appears twice"),
        (lambda d: d.update(joint_names="pelvis"), "field joint_names", "list of non-empty strings"),
        (lambda d: d.update(parts={"tail": [0]}), "field parts.tail", "unknown body part"),
        (lambda d: d.update(parts={"trunk": "pelvis"}), "field parts.trunk", "list of joints"),
        (lambda d: d.update(name="ntu25"), "field name", "built-in layout"),
    ],
)
def test_layout_json_is_read_strictly(tmp_path, edit, where, msg):
    d = json.loads(json.dumps(LAYOUT))
    edit(d)
    p = _write(tmp_path, d)
    with pytest.raises(DataFormatError, match=msg) as ei:
        load_layout_json(p)
    assert str(ei.value).startswith(f"{p}: ") and __import__("re").search(where, str(ei.value))


def test_layout_json_malformed_or_wrong_joint_count(tmp_path):
    with pytest.raises(DataFormatError, match=r"layout\.json: line 1 column \d+: malformed JSON"):
        load_layout_json(_write(tmp_path, '{"joint_names": ['))
    _camera_data(tmp_path, v=6)
    lay = _write(tmp_path, LAYOUT)
    with pytest.raises(DataFormatError, match="layout 'toy5' has 5 joints, the data has 6"):
        get_format("arrays").read(tmp_path / "d.npz", {"layout": str(lay)})


def test_ctrgcn_npz_and_pyskl_centre_by_default(tmp_path):
    import pickle

    rng = np.random.default_rng(1)
    xt = np.zeros((2, 40, 150), np.float32)
    xt[:, :30] = rng.normal(0, 0.3, (2, 30, 150)) + np.tile([0.2, -0.1, 3.0], 50)  # 2 persons, 3 m away
    np.savez(tmp_path / "c.npz", x_train=xt, y_train=np.array([0, 1]), x_test=xt[:1], y_test=np.array([1]))
    for s in get_format("ctrgcn-npz").read(tmp_path / "c.npz", {}):
        np.testing.assert_allclose(s.x[0, 0, 1], 0.0, atol=1e-6)  # actor 1's spine_mid, frame 0
        assert np.linalg.norm(s.x[1].mean(axis=(0, 1))) < 1.0  # actor 2 moved by the same translation
    kp = rng.normal(0, 0.3, (1, 12, 25, 3)).astype(np.float32) + np.array([0.0, 0.0, 2.8], np.float32)
    obj = {"split": {"train": ["a"], "test": []},
           "annotations": [{"frame_dir": "a", "label": 0, "keypoint": kp, "total_frames": 12}]}
    (tmp_path / "p.pkl").write_bytes(pickle.dumps(obj))
    (s,) = get_format("pyskl").read(tmp_path / "p.pkl", {})
    np.testing.assert_allclose(s.x[0, 0, 1], 0.0, atol=1e-6)
    (r,) = get_format("pyskl").read(tmp_path / "p.pkl", {"center": "false"})
    np.testing.assert_allclose(r.x, kp, atol=1e-6)
