"""Format readers, sample validation, layouts, restricted unpickling and the synthetic generator."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from conftest import shared_dataset
from macdiff_ray.config import ConfigError
from macdiff_ray.data.formats import FORMATS, get_format
from macdiff_ray.data.layouts import PART_NAMES, JointLayout, generic_layout, get_layout
from macdiff_ray.data.samples import DataFormatError, RawSample, validate_sample


# ---------------------------------------------------------------- layouts and validation (unit tier)
@pytest.mark.parametrize("name,v", [("ntu25", 25), ("kinect_v1_20", 20), ("msr20", 20)])
def test_named_layouts_are_trees_covering_every_joint(name, v):
    lay = get_layout(name)
    assert lay.num_joints == v and len(lay.bones) == v - 1  # one root, a tree
    covered = sorted(j for k in PART_NAMES for j in lay.parts[k])
    assert covered == list(range(v))  # every joint in exactly one body part
    assert JointLayout.from_dict(json.loads(json.dumps(lay.to_dict()))) == lay


def test_layout_joint_names_match_provenance_order():
    assert get_layout("kinect_v1_20").joint_names[:4] == ("hip_center", "spine", "shoulder_center", "head")
    msr = get_layout("msr20")
    assert msr.joint_names[6] == "hip_center" and msr.parents[6] == -1 and msr.joint_names[19] == "head"
    assert get_layout("ntu25").center_joint == 1


def test_layout_rejects_cycles_and_bad_parts():
    with pytest.raises(ConfigError, match="cycle"):
        JointLayout("bad", ("a", "b"), (1, 0), {k: () for k in PART_NAMES})
    with pytest.raises(ConfigError, match="parts"):
        JointLayout("bad", ("a",), (-1,), {"trunk": (0,)})
    with pytest.raises(ConfigError, match="unknown joint layout"):
        get_layout("kinect_v3")
    g = generic_layout(7)
    assert g.bones == () and g.parts["trunk"] == tuple(range(7)) and get_layout("generic7") == g


def _ok(**kw):
    base = dict(sample_id="s", x=np.zeros((1, 4, 20, 3), np.float32), label=2)
    base.update(kw)
    return RawSample(**base)


@pytest.mark.parametrize(
    "sample,msg",
    [
        (_ok(x=np.full((1, 4, 20, 3), np.nan, np.float32)), "non-finite"),
        (_ok(x=np.full((1, 4, 20, 3), np.inf, np.float32)), "non-finite"),
        (_ok(x=np.zeros((1, 4, 19, 3), np.float32)), "wrong joint count"),
        (_ok(x=np.zeros((1, 4, 20, 2), np.float32)), "wrong coordinate count"),
        (_ok(x=np.zeros((1, 0, 20, 3), np.float32)), "empty sequence"),
        (_ok(x=np.zeros((0, 4, 20, 3), np.float32)), "no person"),
        (_ok(label=10), "out of range"),
        (_ok(label=-1), "out of range"),
        (_ok(split="val"), "split"),
    ],
)
def test_validate_sample_rejects(sample, msg):
    with pytest.raises(DataFormatError, match=msg) as ei:
        validate_sample(sample, num_joints=20, num_classes=10, source="some/file.json")
    assert str(ei.value).startswith("some/file.json: sample 's': ")


def test_validate_sample_accepts_and_error_pickles():
    validate_sample(_ok(), num_joints=20, num_classes=10, source="f")
    e = pickle.loads(pickle.dumps(DataFormatError("f.txt", "line 3", "bad")))
    assert str(e) == "f.txt: line 3: bad" and e.where == "line 3"


def test_registry_lists_every_format_and_rejects_unknown():
    assert {"ucla", "msr", "arrays", "ctrgcn-npz", "pyskl", "synthetic", "ntu", "pku"} <= set(FORMATS)
    with pytest.raises(ValueError, match="unknown data format 'kinetics'"):
        get_format("kinetics")


# ---------------------------------------------------------------- NW-UCLA (real data)
def test_ucla_reads_real_files_including_single_frame():
    src = shared_dataset("nw_ucla") / "all_sqe"
    fmt = get_format("ucla")
    (s,) = fmt.read(src / "a01_s01_e00_v01.json", {"center": False})
    assert s.x.shape[0] == 1 and s.x.shape[2:] == (20, 3) and s.x.dtype == np.float32
    assert (s.label, s.subject, s.replication, s.view) == (0, 1, 0, 1)
    np.testing.assert_allclose(s.x[0, 0, 0], [-0.619699, 0.328046, 3.18186], rtol=1e-6)  # PROVENANCE excerpt
    (c,) = fmt.read(src / "a01_s01_e00_v01.json", {})  # default: centred on the spine joint of frame 0
    np.testing.assert_allclose(c.x[0, 0, 1], 0.0, atol=1e-7)
    np.testing.assert_allclose(c.x - s.x, np.broadcast_to(-s.x[0, 0, 1], s.x.shape), atol=1e-6)
    (one,) = fmt.read(src / "a02_s09_e04_v02.json", {})
    assert one.x.shape[1] == 1 and one.label == 1
    (last,) = fmt.read(src / "a12_s01_e00_v02.json", {})
    assert (last.label, last.view) == (9, 2)  # a12 -> label 10 (1-based); ids 07 and 10 do not exist


def _corrupt_ucla(tmp_path, edit):
    src = shared_dataset("nw_ucla") / "all_sqe" / "a01_s01_e00_v01.json"
    dst = tmp_path / src.name
    text = src.read_text()
    dst.write_text(edit(text))
    return dst


def test_ucla_truncated_json_names_file_and_line(tmp_path):
    f = _corrupt_ucla(tmp_path, lambda t: t[: len(t) // 2])
    with pytest.raises(DataFormatError, match=r"a01_s01_e00_v01\.json: line 1 column \d+: malformed JSON"):
        get_format("ucla").read(f, {})


@pytest.mark.parametrize(
    "edit,msg",
    [
        (lambda o: o["skeletons"][3][5].__setitem__(1, float("nan")), "non-finite"),
        (lambda o: [fr.pop() for fr in o["skeletons"]], "wrong joint count: 19"),
        (lambda o: o.__setitem__("skeletons", []), "empty sequence"),
        (lambda o: o.__setitem__("label", 11), "label 10 out of range"),
    ],
)
def test_ucla_corrupted_content_fails_validation_naming_file(tmp_path, edit, msg):
    def change(text):
        o = json.loads(text)
        edit(o)
        return json.dumps(o)  # NaN is written as the JSON extension token NaN, which Python's parser accepts

    f = _corrupt_ucla(tmp_path, change)
    samples = get_format("ucla").read(f, {})
    with pytest.raises(DataFormatError, match=msg) as ei:
        for s in samples:
            validate_sample(s, num_joints=20, num_classes=10, source=str(f))
    assert str(f) in str(ei.value)


def test_ucla_label_must_agree_with_file_name(tmp_path):
    f = _corrupt_ucla(tmp_path, lambda t: t.replace('"label": 1', '"label": 3'))
    with pytest.raises(DataFormatError, match="field label: label 3 disagrees with action id a01"):
        get_format("ucla").read(f, {})


def test_empty_input_folder_raises(tmp_path):
    with pytest.raises(DataFormatError, match="no NW-UCLA"):
        get_format("ucla").list_inputs(tmp_path, {})
    with pytest.raises(DataFormatError, match="does not exist"):
        get_format("msr").list_inputs(tmp_path / "nope", {})


# ---------------------------------------------------------------- MSR Action3D (real data)
def test_msr_reader_drops_zero_frames_and_confidence():
    root = shared_dataset("msr_action3d")
    fmt = get_format("msr")
    (s,) = fmt.read(root / "skeletons" / "a01_s01_e01_skeleton3D.txt", {"center": False})
    np.testing.assert_allclose(s.x[0, 0, 0], [-0.371736, 0.371031, 2.674849], rtol=1e-6)
    assert (s.label, s.subject, s.replication) == (0, 1, 1)
    (bad,) = fmt.read(root / "skeletons" / "a07_s04_e01_skeleton3D.txt", {})
    assert bad.x.shape[1] == 45 - 36  # PROVENANCE: 36 of its 45 frames are zero
    with pytest.raises(DataFormatError, match="all 38 frames are zero"):
        fmt.read(root / "skeletons" / "a13_s09_e02_skeleton3D.txt", {})
    inputs, skipped = fmt.list_inputs(root, {})
    assert len(inputs) == 557 and len(skipped) == 10
    assert len(fmt.list_inputs(root, {"subset": "all"})[0]) == 567


def test_msr_malformed_line_names_line(tmp_path):
    src = shared_dataset("msr_action3d") / "skeletons" / "a01_s01_e01_skeleton3D.txt"
    lines = src.read_text().splitlines()
    lines[6] = "0.1 0.2 oops 1.0"
    f = tmp_path / src.name
    f.write_text("\n".join(lines))
    with pytest.raises(DataFormatError, match=r"a01_s01_e01_skeleton3D\.txt: line 7: not a number"):
        get_format("msr").read(f, {})


# ---------------------------------------------------------------- arrays, ctrgcn-npz, pyskl (synthetic inputs)
def test_arrays_units_persons_and_lengths(tmp_path):
    x = np.zeros((3, 2, 10, 25, 3), np.float32)
    x[:, 0, :7] = 1000.0  # mm
    x[1, 1, :5] = 500.0  # second person present in sample 1 only
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1, 2]), lengths=np.array([7, 7, 4]),
             split=np.array(["train", "test", ""]), subject=np.array([1, 2, 3]))
    fmt = get_format("arrays")
    s_m = fmt.read(tmp_path / "d.npz", {"units": "mm", "center": False})  # camera coordinates kept
    assert [s.x.shape[:2] for s in s_m] == [(1, 7), (2, 7), (1, 4)]
    np.testing.assert_allclose(s_m[1].x[1, 0, 0], [0.5, 0.5, 0.5])
    np.testing.assert_allclose(s_m[0].x.max(), 1.0)
    assert fmt.read(tmp_path / "d.npz", {"units": "cm", "center": False})[0].x.max() == pytest.approx(10.0)
    assert [s.split for s in s_m] == ["train", "test", ""] and s_m[2].subject == 3
    assert fmt.layout_for({}, s_m).name == "ntu25"


def test_arrays_refuses_pickled_members(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((1, 2, 25, 3), np.float32), y=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataFormatError, match="field y: cannot be read without pickle"):
        get_format("arrays").read(tmp_path / "d.npz", {})


def test_ctrgcn_npz_layout_onehot_and_lengths(tmp_path):
    rng = np.random.default_rng(0)
    xt = np.zeros((2, 300, 150), np.float32)
    xt[0, :50, :75] = rng.normal(size=(50, 75))  # one person, 50 frames
    xt[1, :80] = rng.normal(size=(80, 150))  # two persons, 80 frames
    y = np.eye(4)[[1, 3]]
    np.savez(tmp_path / "NTU_CS.npz", x_train=xt, y_train=y, x_test=xt[:1], y_test=np.eye(4)[[2]])
    ss = get_format("ctrgcn-npz").read(tmp_path / "NTU_CS.npz", {"center": False})  # the file's values
    assert [(s.sample_id, s.x.shape, s.label, s.split) for s in ss] == [
        ("train_000000", (1, 50, 25, 3), 1, "train"),
        ("train_000001", (2, 80, 25, 3), 3, "train"),
        ("test_000000", (1, 50, 25, 3), 2, "test"),
    ]
    np.testing.assert_array_equal(ss[1].x[1, 3], xt[1, 3, 75:].reshape(25, 3))  # person 2 = values 75..149


def _pyskl_obj():
    kp = np.ones((2, 6, 25, 3), np.float32)
    kp[1] = 0  # absent second person
    return {"split": {"xsub_train": ["a"], "xsub_val": ["b"]},
            "annotations": [{"frame_dir": "a", "label": 3, "keypoint": kp, "total_frames": 5},
                            {"frame_dir": "b", "label": np.int64(1), "keypoint": kp * 2, "total_frames": 6}]}


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_pyskl_reads_with_restricted_unpickler(tmp_path, protocol):
    f = tmp_path / "ann.pkl"
    f.write_bytes(pickle.dumps(_pyskl_obj(), protocol=protocol))
    fmt = get_format("pyskl")
    with pytest.raises(DataFormatError, match="no split named 'train'"):
        fmt.read(f, {})
    ss = fmt.read(f, {"train_split": "xsub_train", "test_split": "xsub_val"})
    assert [(s.sample_id, s.x.shape, s.label, s.split) for s in ss] == [
        ("a", (1, 5, 25, 3), 3, "train"), ("b", (1, 6, 25, 3), 1, "test")]


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_pyskl_refuses_malicious_pickle_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    obj = _pyskl_obj()
    obj["annotations"][0]["keypoint"] = _Evil(marker)
    f = tmp_path / "evil.pkl"
    f.write_bytes(pickle.dumps(obj))
    with pytest.raises(DataFormatError, match=r"evil\.pkl: pickle: refused global (posix|os|nt)\.system"):
        get_format("pyskl").read(f, {"train_split": "xsub_train", "test_split": "xsub_val"})
    assert not marker.exists()
    f.write_bytes(pickle.dumps({"split": {}, "annotations": [eval]}))
    with pytest.raises(DataFormatError, match="refused global builtins.eval"):
        get_format("pyskl").read(f, {})
    f.write_bytes(b"\x80\x04garbage")
    with pytest.raises(DataFormatError, match="cannot be unpickled"):
        get_format("pyskl").read(f, {})


# ---------------------------------------------------------------- synthetic
def test_synthetic_is_deterministic_and_varied():
    fmt = get_format("synthetic")
    opts = {"num_samples": 24, "num_classes": 12, "seed": 3}
    (path,) = fmt.list_inputs(None, opts)[0]
    a, b = fmt.read(path, opts), fmt.read(path, opts)
    assert all(np.array_equal(p.x, q.x) for p, q in zip(a, b))
    lengths = {s.x.shape[1] for s in a}
    assert min(lengths) >= 32 and max(lengths) <= 64 and len(lengths) > 5
    assert sorted({s.label for s in a}) == list(range(12))
    for s in a:
        validate_sample(s, num_joints=25, num_classes=12, source="synthetic")
    other = fmt.read(path, {**opts, "seed": 4})
    assert not np.array_equal(a[0].x[:, :5], other[0].x[:, :5])
