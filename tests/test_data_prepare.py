"""prepare_dataset: real conversions, shard schema, statistics, determinism, atomicity, error handling."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import shared_dataset
from macdiff_ray.data import prepare as prepare_mod
from macdiff_ray.data.manifest import ManifestError, list_shards, load_manifest
from macdiff_ray.data.prepare import prepare_dataset
from macdiff_ray.data.samples import DataFormatError
from macdiff_ray.data.shards import table_x

COLUMNS = ["sample_id", "x", "length", "num_persons", "label", "subject", "view", "setup", "replication", "split"]


def _all_rows(d) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in list_shards(d)])


def test_ucla_prepared_counts_schema_and_padding(ucla_prepared):
    m = load_manifest(ucla_prepared, verify_checksums=True)
    assert (m["dataset"], m["num_samples"], m["num_classes"], m["num_joints"]) == ("ucla", 1484, 10, 20)
    assert m["split_counts"] == {"ucla-xview": {"train": 1020, "test": 464}}
    assert m["layout"]["name"] == "kinect_v1_20" and m["max_frames"] == 201 and m["skipped"] == []
    t = _all_rows(ucla_prepared)
    assert t.column_names == COLUMNS
    assert t.schema.field("x").type.shape == [1, 201, 20, 3]
    ids = t.column("sample_id").to_pylist()
    assert ids == sorted(ids) and len(set(ids)) == 1484
    x = table_x(t)  # (N, 1, 201, 20, 3)
    lengths = t.column("length").to_numpy()
    assert lengths.min() == 1 and np.isfinite(x).all()
    frame_used = np.any(x[:, 0] != 0, axis=(2, 3))  # (N, T)
    assert (frame_used.sum(1) == lengths).all()  # PROVENANCE: no all-zero frames, so padding = zeros past length
    assert np.bincount(t.column("label").to_numpy()).tolist() == [150, 152, 141, 173, 148, 149, 142, 142, 145, 142]


def test_stats_equal_direct_computation_on_train_split(ucla_prepared):
    m = load_manifest(ucla_prepared)
    t = _all_rows(ucla_prepared)
    x, lengths = table_x(t)[:, 0], t.column("length").to_numpy()
    train = np.isin(t.column("view").to_numpy(), [1, 2])
    pts = np.concatenate([x[i, : lengths[i]].reshape(-1, 3) for i in np.flatnonzero(train)]).astype(np.float64)
    np.testing.assert_allclose(m["stats"]["ucla-xview"]["mean"], pts.mean(0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(m["stats"]["ucla-xview"]["std"], pts.std(0), rtol=1e-9)


def test_msr_counts_match_provenance(tmp_path):
    root = shared_dataset("msr_action3d")
    m = prepare_dataset("msr", root, tmp_path / "msr", progress=False)
    clean = (root / "files_used_in_cvpr12_paper.txt").read_text().split()
    odd = sum(int(n[5:7]) % 2 == 1 for n in clean)
    assert m["num_samples"] == 557 and len(m["skipped"]) == 10
    assert m["split_counts"]["msr-xsub"] == {"train": odd, "test": 557 - odd}
    assert all("not in files_used_in_cvpr12_paper.txt" in s["reason"] for s in m["skipped"])
    assert m["num_classes"] == 20 and m["layout"]["name"] == "msr20"


def test_conversion_is_byte_deterministic(tmp_path):
    root = shared_dataset("msr_action3d")
    a = prepare_dataset("msr", root, tmp_path / "a", progress=False, shard_rows=200)
    b = prepare_dataset("msr", root, tmp_path / "b", progress=False, shard_rows=200)
    assert len(a["shards"]) == 3 and a["shards"] == b["shards"]
    assert (tmp_path / "a" / "manifest.json").read_bytes() == (tmp_path / "b" / "manifest.json").read_bytes()
    for s in a["shards"]:
        assert (tmp_path / "a" / s["path"]).read_bytes() == (tmp_path / "b" / s["path"]).read_bytes()


def _ucla_subset(tmp_path, n=6):
    src = shared_dataset("nw_ucla") / "all_sqe"
    d = tmp_path / "in"
    d.mkdir()
    for f in sorted(src.glob("*.json"))[:n]:
        shutil.copy(f, d / f.name)
    return d


def test_failure_midway_leaves_nothing_complete(tmp_path):
    d = _ucla_subset(tmp_path)
    bad = sorted(d.glob("*.json"))[3]
    bad.write_text(bad.read_text()[:100])
    out = tmp_path / "out"
    with pytest.raises(DataFormatError, match=bad.name):
        prepare_dataset("ucla", d, out, progress=False, shard_rows=2)
    assert not out.exists() and list(tmp_path.glob("out*")) == []


def test_crash_while_writing_shards_leaves_nothing(tmp_path, monkeypatch):
    d = _ucla_subset(tmp_path)
    calls = []

    def boom(table, path):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full (simulated)")
        pq.write_table(table, str(path))

    monkeypatch.setattr(prepare_mod, "write_shard", boom)
    with pytest.raises(OSError, match="simulated"):
        prepare_dataset("ucla", d, tmp_path / "out", progress=False, shard_rows=2)
    assert len(calls) == 2 and list(tmp_path.glob("out*")) == []


def test_on_error_skip_records_reasons_and_nan_never_stored(tmp_path):
    d = _ucla_subset(tmp_path, n=8)
    files = sorted(d.glob("*.json"))
    files[1].write_text(files[1].read_text()[:50])  # truncated
    o = json.loads(files[2].read_text())
    o["skeletons"][0][0][0] = float("nan")
    files[2].write_text(json.dumps(o))
    o = json.loads(files[3].read_text())
    o["label"] = 42
    files[3].write_text(json.dumps(o))
    (d / "notes.json").write_text("{}")  # not an aAA_sSS_eEE_vVV name
    m = prepare_dataset("ucla", d, tmp_path / "out", on_error="skip", progress=False)
    assert m["num_samples"] == 5
    reasons = {s["input"]: s["reason"] for s in m["skipped"]}
    assert "malformed JSON" in reasons[files[1].name]
    assert "non-finite" in reasons[f"{files[2].name}#{files[2].stem}"]
    assert "label 41 out of range" in reasons[f"{files[3].name}#{files[3].stem}"]
    assert "aAA_sSS_eEE_vVV" in reasons["notes.json"]
    assert np.isfinite(table_x(_all_rows(tmp_path / "out"))).all()
    files[1].unlink()
    (d / "notes.json").unlink()
    with pytest.raises(DataFormatError, match=rf"{files[2].name}: sample '{files[2].stem}': non-finite"):
        prepare_dataset("ucla", d, tmp_path / "out2", progress=False)  # on_error="raise" stops at the NaN
    assert not (tmp_path / "out2").exists()


def test_overwrite_and_existing_folders(tmp_path):
    d = _ucla_subset(tmp_path, n=3)
    out = tmp_path / "out"
    prepare_dataset("ucla", d, out, progress=False)
    with pytest.raises(FileExistsError, match="already exists"):
        prepare_dataset("ucla", d, out, progress=False)
    (d / sorted(p.name for p in d.iterdir())[0]).unlink()
    m = prepare_dataset("ucla", d, out, progress=False, overwrite=True)
    assert m["num_samples"] == 2 and load_manifest(out)["num_samples"] == 2
    assert not list(tmp_path.glob("out.*"))
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="not empty"):
        prepare_dataset("ucla", d, other, progress=False)


def test_option_and_argument_errors(tmp_path):
    d = _ucla_subset(tmp_path, n=2)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['missing_lst'\]"):
        prepare_dataset("ucla", d, tmp_path / "o", missing_lst="x")
    with pytest.raises(ValueError, match="takes no units option"):
        prepare_dataset("ucla", d, tmp_path / "o", units="cm")
    with pytest.raises(ValueError, match="on_error"):
        prepare_dataset("ucla", d, tmp_path / "o", on_error="ignore")
    (tmp_path / "empty_in").mkdir()
    with pytest.raises(DataFormatError, match="no NW-UCLA"):
        prepare_dataset("ucla", tmp_path / "empty_in", tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()


def test_manifest_checks(tmp_path):
    d = _ucla_subset(tmp_path, n=3)
    out = tmp_path / "out"
    m = prepare_dataset("ucla", d, out, progress=False)
    shard = out / m["shards"][0]["path"]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    load_manifest(out)  # presence only
    with pytest.raises(ManifestError, match="sha256"):
        load_manifest(out, verify_checksums=True)
    shard.unlink()
    with pytest.raises(ManifestError, match="does not exist"):
        load_manifest(out)
    mj = json.loads((out / "manifest.json").read_text())
    mj["schema_version"] = 99
    (out / "manifest.json").write_text(json.dumps(mj))
    with pytest.raises(ManifestError, match="schema_version 99"):
        load_manifest(out)
    with pytest.raises(ManifestError, match="not a prepared dataset"):
        load_manifest(tmp_path)


def test_arrays_units_end_to_end(tmp_path):
    x = np.zeros((4, 12, 25, 3), np.float32)
    x[:, :10] = np.arange(25 * 3, dtype=np.float32).reshape(25, 3) * 10.0  # cm
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1, 0, 1]), split=np.array(["train", "train", "test", "test"]))
    m = prepare_dataset("arrays", tmp_path / "d.npz", tmp_path / "out", units="cm", progress=False,
                        center="false")  # raw coordinates: the values below are the file's (centring: test_data_arrays)
    assert m["dataset"] == "custom" and m["split_counts"] == {"custom": {"train": 2, "test": 2}}
    t = _all_rows(tmp_path / "out")
    assert t.column("length").to_pylist() == [10] * 4
    np.testing.assert_allclose(table_x(t)[0, 0, 0, 2], [0.6, 0.7, 0.8], rtol=1e-6)  # joint 2 = (6, 7, 8) x 10 cm
    np.testing.assert_allclose(m["stats"]["custom"]["mean"], x[0, 0].reshape(-1, 3).mean(0) / 100, rtol=1e-6)


def test_synthetic_fixture(synthetic_prepared):
    m = load_manifest(synthetic_prepared)
    assert m["dataset"] == "synthetic" and m["num_samples"] == 240 and m["num_classes"] == 6
    assert m["split_counts"]["synthetic"] == {"train": 120, "test": 120}
    assert m["layout"]["name"] == "ntu25" and 32 <= m["max_frames"] <= 64


def _yaw(x: np.ndarray, angle: float) -> np.ndarray:
    """x (..., 3) turned by ``angle`` rad about the y axis."""
    c, s = np.cos(angle), np.sin(angle)
    return x @ np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], np.float32).T


def test_face_forward_removes_the_camera_azimuth_and_keeps_the_motion():
    from macdiff_ray.data.layouts import KINECT_V1_20
    from macdiff_ray.data.samples import face_forward, facing_joints

    pairs = facing_joints(KINECT_V1_20)
    assert pairs == ((12, 16), (4, 8))  # hips, shoulders of the Kinect v1 order
    rng = np.random.default_rng(0)
    body = rng.normal(0, 0.3, (1, 6, 20, 3)).astype(np.float32)  # (M, T, V, C)
    body[:, 4:] = 0  # two untracked frames
    ref = face_forward(body, pairs)
    first = ref[0, 0]
    v = (first[12] - first[16]) + (first[4] - first[8])
    assert v[0] > 0 and abs(v[2]) < 1e-5  # the facing vector lies on +x
    np.testing.assert_allclose(ref[..., 1], body[..., 1], atol=1e-6)  # heights untouched
    assert not ref[:, 4:].any()  # untracked frames stay zero
    # the same body seen from any other azimuth comes out the same, and distances within it are kept
    for angle in (0.7, -2.0, np.pi):
        turned = np.where(np.any(body != 0, axis=(2, 3), keepdims=True), _yaw(body, angle), 0).astype(np.float32)
        np.testing.assert_allclose(face_forward(turned, pairs), ref, atol=1e-5)
    d = lambda a: np.linalg.norm(a[0, :4, :, None] - a[0, :4, None], axis=-1)  # noqa: E731
    np.testing.assert_allclose(d(ref), d(body), atol=1e-5)
    # z up: the rotation is about z, and x stays the facing axis
    zup = body[..., [0, 2, 1]]
    out = face_forward(zup, pairs, up=2)
    np.testing.assert_allclose(out[..., 2], zup[..., 2], atol=1e-6)
    w = (out[0, 0, 12] - out[0, 0, 16]) + (out[0, 0, 4] - out[0, 0, 8])
    assert w[0] > 0 and abs(w[1]) < 1e-5


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """The 3x3 rotation by ``angle`` rad about ``axis`` (Rodrigues)."""
    k = axis / np.linalg.norm(axis)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx


def test_stand_upright_removes_any_camera_rotation_and_keeps_the_motion():
    from macdiff_ray.data.layouts import KINECT_V1_20, MSR20
    from macdiff_ray.data.samples import facing_joints, stand_upright

    pairs = facing_joints(KINECT_V1_20)
    (lh, rh), (ls, rs) = pairs
    rng = np.random.default_rng(1)
    body = rng.normal(0, 0.3, (1, 6, 20, 3)).astype(np.float32)  # (M, T, V, C)
    body[:, 5:] = 0  # an untracked frame
    ref = stand_upright(body, pairs)
    f = ref[0, 0].astype(np.float64)
    up = (f[ls] + f[rs] - f[lh] - f[rh]) / 2
    facing = (f[lh] - f[rh]) + (f[ls] - f[rs])
    np.testing.assert_allclose(up[[0, 2]], 0, atol=1e-5)  # hips -> shoulders along +y
    assert up[1] > 0
    assert facing[0] > 0 and abs(facing[2]) < 1e-5  # facing in the x-y plane, towards +x
    assert not ref[:, 5:].any()
    d = lambda a: np.linalg.norm(a[0, :5, :, None] - a[0, :5, None], axis=-1)  # noqa: E731
    np.testing.assert_allclose(d(ref), d(body), atol=1e-5)  # a rigid motion: distances kept in every frame
    # the same body seen by a camera tilted, rolled and turned any way comes out the same
    for axis, angle in (((1, 0, 0), 0.4), ((0.3, 1, -0.2), 2.5), ((1, 1, 1), -1.2)):
        r = _rotation(np.asarray(axis, float), angle).astype(np.float32)
        seen = np.where(np.any(body != 0, axis=(2, 3), keepdims=True), body @ r.T, 0).astype(np.float32)
        np.testing.assert_allclose(stand_upright(seen, pairs), ref, atol=1e-4)
    # a proper rotation: the mirror image of the body is not turned into the body
    mirrored = body * np.array([-1, 1, 1], np.float32)
    assert not np.allclose(stand_upright(mirrored, pairs), ref, atol=1e-3)
    assert np.array_equal(stand_upright(np.zeros_like(body), pairs), np.zeros_like(body))
    with pytest.raises(ValueError, match="align=full needs a hip pair and a shoulder pair"):
        stand_upright(body, pairs[:1])
    assert len(facing_joints(MSR20)) == 2


def test_align_option_end_to_end_and_its_errors(tmp_path):
    from macdiff_ray.data.layouts import KINECT_V1_20
    from macdiff_ray.data.samples import face_forward, facing_joints, stand_upright

    d = _ucla_subset(tmp_path, n=3)
    plain = prepare_dataset("ucla", d, tmp_path / "plain", progress=False)
    aligned = prepare_dataset("ucla", d, tmp_path / "aligned", progress=False, align="true")
    assert (plain["align"], aligned["align"]) == (None, "y")
    a, b = _all_rows(tmp_path / "plain"), _all_rows(tmp_path / "aligned")
    xa, xb = table_x(a), table_x(b)  # (N, 1, T, V, C)
    assert not np.allclose(xa, xb)
    for i, n in enumerate(a.column("length").to_pylist()):  # each sample is the reader's, turned
        np.testing.assert_allclose(xb[i, :, :n], face_forward(xa[i, :, :n], facing_joints(KINECT_V1_20)), atol=1e-5)
    assert aligned["stats"] != plain["stats"]
    full = prepare_dataset("ucla", d, tmp_path / "full", progress=False, align="full")
    assert full["align"] == "full"
    xf = table_x(_all_rows(tmp_path / "full"))
    for i, n in enumerate(a.column("length").to_pylist()):
        np.testing.assert_allclose(xf[i, :, :n], stand_upright(xa[i, :, :n], facing_joints(KINECT_V1_20)), atol=1e-5)
    with pytest.raises(ValueError, match="option align must be true, false, x, y, z .the up axis. or full"):
        prepare_dataset("ucla", d, tmp_path / "o", progress=False, align="up")
    assert not (tmp_path / "o").exists()
    # a layout without hips or shoulders has no facing: refused with the layout's name
    x = np.random.default_rng(0).normal(size=(2, 8, 5, 3)).astype(np.float32)
    np.savez(tmp_path / "g.npz", x=x, y=np.array([0, 1]), split=np.array(["train", "test"]))
    with pytest.raises(ValueError, match="layout 'generic5'.*leave align off"):
        prepare_dataset("arrays", tmp_path / "g.npz", tmp_path / "o", progress=False, align="true")
    assert not (tmp_path / "o").exists()
    # hips alone give a facing, but no up vector: full is refused, naming the layout
    (tmp_path / "hips.json").write_text(json.dumps({"name": "hips5", "root": 0, "parents": [-1, 0, 0, 0, 0],
                                                    "joint_names": ["pelvis", "left_hip", "right_hip", "a", "b"]}))
    with pytest.raises(ValueError, match="align=full: layout 'hips5' needs both a hip and a shoulder pair"):
        prepare_dataset("arrays", tmp_path / "g.npz", tmp_path / "o", progress=False, align="full",
                        layout=str(tmp_path / "hips.json"))
    assert not (tmp_path / "o").exists()
