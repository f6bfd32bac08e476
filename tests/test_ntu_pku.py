"""NTU RGB+D ``.skeleton`` and PKU-MMD readers: synthetic unit tests, real-data tests, corrupted copies."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_dataset
from macdiff_ray.data.formats import get_format
from macdiff_ray.data.formats import ntu, pku
from macdiff_ray.data.samples import DataFormatError, RawSample, validate_sample

RNG = np.random.default_rng(0)


# ----------------------------------------------------------------------------------------------------------------
# Synthetic NTU files
# ----------------------------------------------------------------------------------------------------------------
def _person(t: int, offset=(0.0, 0.0, 3.0), amp: float = 0.05, seed: int = 0) -> np.ndarray:
    """A plausible upright body (y-spread 1.6 m > x-spread 0.5 m) moving a little: (t, 25, 3)."""
    rng = np.random.default_rng(seed)
    base = np.stack([rng.uniform(-0.25, 0.25, 25), np.linspace(-0.8, 0.8, 25), rng.uniform(-0.1, 0.1, 25)], -1)
    wobble = amp * np.sin(np.linspace(0, 3, t))[:, None, None] * rng.normal(size=(1, 25, 3))
    return (base[None] + wobble + np.asarray(offset)).astype(np.float32)  # (t, 25, 3)


def _wide(t: int, seed: int = 5, amp: float = 0.5) -> np.ndarray:
    """A "noisy" body, wide in x (x-spread 2 m > 0.8 * y-spread 0.3 m), moving a lot: (t, 25, 3)."""
    rng = np.random.default_rng(seed)
    base = np.stack([np.linspace(-1, 1, 25), rng.uniform(-0.15, 0.15, 25), np.full(25, 3.0)], -1)
    return (base[None] + amp * rng.normal(size=(t, 1, 3))).astype(np.float32)


def _skeleton_text(frames: list[list[tuple[str, np.ndarray]]], newline: str = "\n") -> str:
    """frames[f] = [(bodyID, joints (25, 3)), ...] -> .skeleton text."""
    out = [str(len(frames))]
    for bodies in frames:
        out.append(str(len(bodies)))
        for bid, j in bodies:
            out.append(f"{bid} 0 1 1 1 1 0 0.01 0.02 2")
            out.append("25")
            for v in range(25):
                x, y, z = (float(c) for c in j[v])
                out.append(f"{x:.7g} {y:.7g} {z:.7g} 250.1 180.2 1000.3 500.4 0.1 0.2 0.3 0.4 2")
    return newline.join(out) + newline


def _tracks(spec: dict[str, tuple[int, np.ndarray]], n_frames: int) -> list[list[tuple[str, np.ndarray]]]:
    """{bodyID: (first frame, joints (t, 25, 3))} -> frames list (bodies in dict order within a frame)."""
    frames: list[list] = [[] for _ in range(n_frames)]
    for bid, (start, joints) in spec.items():
        for k in range(len(joints)):
            frames[start + k].append((bid, joints[k]))
    return frames


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / f"{name}.skeleton"
    p.write_text(text, newline="")
    return p


def _read_one(path: Path) -> RawSample:
    (s,) = get_format("ntu").read(path, {})
    validate_sample(s, num_joints=25, num_classes=120, source=str(path))
    return s


def test_parse_ntu_name():
    n = ntu.parse_ntu_name("S018C002P045R002A113")
    assert (n.setup, n.camera, n.performer, n.replication, n.action) == (18, 2, 45, 2, 113)
    for bad in ("S001C001P001R001A01", "s001C001P001R001A001", "S001C001P001R001A000", "x"):
        with pytest.raises(DataFormatError, match="file name"):
            ntu.parse_ntu_name(bad, "f.skeleton")


def test_frames_without_body_are_dropped(tmp_path):
    a = _person(6)
    frames = [[("1", a[0])], [], [("1", a[1])], [("1", a[2])], [], [("1", a[3])]]
    bodies, n_frames, n_valid = ntu.parse_skeleton_text(_skeleton_text(frames), "t")
    assert (n_frames, n_valid, len(bodies)) == (6, 4, 1)
    assert bodies[0].frames.tolist() == [0, 1, 2, 3]
    s = _read_one(_write(tmp_path, "S001C001P001R001A001", _skeleton_text(frames)))
    assert s.x.shape == (1, 4, 25, 3)
    np.testing.assert_allclose(s.x[0], a[:4] - a[0, 1], atol=1e-5)


def test_all_zero_file_frames_and_translation_keep_absent_zero(tmp_path):
    # actor 1 present in all 30 frames (frames 3, 4 all-zero joints -> both actors absent there -> dropped);
    # actor 2 present only in frames 10..29 -> its frames 0..9 must stay exactly zero after translation.
    a, b = _person(30, seed=1), _person(20, offset=(1.0, 0, 3), seed=2, amp=0.01)
    a[3:5] = 0.0
    frames = _tracks({"A": (0, a), "B": (10, b)}, 30)
    s = _read_one(_write(tmp_path, "S001C001P001R001A050", _skeleton_text(frames)))
    assert s.x.shape == (2, 28, 25, 3)
    origin = a[0, 1]
    np.testing.assert_allclose(s.x[0, 0, 1], 0.0, atol=1e-6)
    assert np.all(s.x[1, :8] == 0.0)  # frames 0..9 minus the dropped 3, 4
    np.testing.assert_allclose(s.x[1, 8:], b - origin, atol=1e-5)
    np.testing.assert_allclose(s.x[0], np.delete(a, [3, 4], axis=0) - origin, atol=1e-5)


def test_body_id_change_mid_sequence_continues_actor_one(tmp_path):
    # the later track "222" moves more, so it ranks first (actor 1); "111" does not overlap it in time and
    # continues actor 1. The origin is actor 1's first present frame: frame 0, which holds "111".
    a, b = _person(20, seed=1, amp=0.01), _person(20, seed=2, offset=(0.1, 0, 3.1), amp=0.3)
    assert ntu._motion(b) > ntu._motion(a)
    frames = _tracks({"111": (0, a), "222": (20, b)}, 40)
    bodies, _, _ = ntu.parse_skeleton_text(_skeleton_text(frames), "t")
    assert [x.body_id for x in ntu.denoise_bodies(bodies)] == ["222", "111"]
    s = _read_one(_write(tmp_path, "S001C001P001R001A001", _skeleton_text(frames)))
    assert s.x.shape == (1, 40, 25, 3)
    np.testing.assert_allclose(s.x[0, :20], a - a[0, 1], atol=1e-5)
    np.testing.assert_allclose(s.x[0, 20:], b - a[0, 1], atol=1e-5)


def test_short_and_noisy_bodies_dropped_and_ranked_by_motion(tmp_path):
    calm = _person(40, seed=1, amp=0.01)
    active = _person(40, seed=2, amp=0.3, offset=(1.0, 0, 3))
    noisy = _wide(40)  # wide in x in every frame, most motion of all
    short = _person(11, seed=3, amp=1.0, offset=(-1, 0, 3))  # tracked 11 frames: dropped
    assert ntu._motion(noisy) > ntu._motion(active) > ntu._motion(calm)
    frames = _tracks({"calm": (0, calm), "noisy": (0, noisy), "short": (5, short), "active": (0, active)}, 40)
    bodies, _, n_valid = ntu.parse_skeleton_text(_skeleton_text(frames), "t")
    assert [b.body_id for b in bodies] == ["calm", "noisy", "active", "short"]  # order of first appearance
    ranked = ntu.denoise_bodies(bodies)
    assert [b.body_id for b in ranked] == ["active", "calm"]
    s = _read_one(_write(tmp_path, "S001C001P001R001A052", _skeleton_text(frames)))
    assert s.x.shape == (2, 40, 25, 3)
    origin = active[0, 1]
    np.testing.assert_allclose(s.x[0], active - origin, atol=1e-5)
    np.testing.assert_allclose(s.x[1], calm - origin, atol=1e-5)


def test_partly_noisy_body_kept_with_lowered_motion():
    good = _person(30, seed=1, amp=0.2)
    part = _person(30, seed=2, amp=0.2)
    part[:10] = _wide(10, amp=2.0)  # 10/30 noisy frames < 69.754 %: kept
    other = _person(30, seed=4, amp=0.01)
    bodies = [ntu.BodyTrack("p", np.arange(30), part, ntu._motion(part)),
              ntu.BodyTrack("g", np.arange(30), good, ntu._motion(good)),
              ntu.BodyTrack("o", np.arange(30), other, ntu._motion(other))]
    before = bodies[0].motion
    ranked = ntu.denoise_bodies(bodies)
    assert {b.body_id for b in ranked} == {"p", "g", "o"}
    assert bodies[0].motion == pytest.approx(min(before, ntu._motion(part[10:])))
    assert bodies[0].motion < before


def test_third_overlapping_body_is_discarded():
    a, b, c = (_person(30, seed=s) for s in (1, 2, 3))
    # motions set by hand (c, a, b listed out of rank order): ranking a > b > c; c overlaps both actors
    bodies = [ntu.BodyTrack(k, np.arange(30), j, m) for k, j, m in (("c", c, 1.0), ("a", a, 3.0), ("b", b, 2.0))]
    x = ntu.preprocess(bodies, 30)
    assert x.shape == (2, 30, 25, 3)
    np.testing.assert_allclose(x[0], a - a[0, 1], atol=1e-5)
    np.testing.assert_allclose(x[1], b - a[0, 1], atol=1e-5)


@pytest.mark.parametrize(
    "mutate, where, what",
    [
        (lambda L: L[:40], "line 41", "truncated"),
        (lambda L: L[:5] + [" ".join(L[5].split()[:11])] + L[6:], "line 6", "11 values"),
        (lambda L: L[:7] + [L[7].replace(L[7].split()[1], "nan", 1)] + L[8:], "line 8", "non-finite"),
        (lambda L: L[:9] + [L[9].replace(L[9].split()[2], "abc", 1)] + L[10:], "line 10", "not a number"),
        (lambda L: L[:3] + ["24"] + L[4:], "line 4", "joint count 24"),
        (lambda L: L[:2] + ["1 0 1 1 1 1 0 0.01 0.02"] + L[3:], "line 3", "9 values"),
        (lambda L: L + ["1 2 3"], "line 58", "after the last"),
        (lambda L: ["two"] + L[1:], "line 1", "integer"),
    ],
)
def test_synthetic_corruptions_name_file_and_line(tmp_path, mutate, where, what):
    text = _skeleton_text([[("1", j)] for j in _person(2)])  # 1 + 2 * 28 = 57 lines
    lines = text.splitlines()
    p = _write(tmp_path, "S001C001P001R001A001", "\n".join(mutate(lines)) + "\n")
    with pytest.raises(DataFormatError) as e:
        get_format("ntu").read(p, {})
    assert e.value.source == str(p) and e.value.where == where and what in e.value.message, str(e.value)


def test_missing_list_option_and_dataset_name(tmp_path):
    d = tmp_path / "sk"
    d.mkdir()
    for name in ("S001C001P001R001A001", "S001C001P001R001A002", "S018C001P045R001A061"):
        _write(d, name, _skeleton_text([[("1", j)] for j in _person(3)]))
    lst = tmp_path / "missing.txt"
    lst.write_text("Samples with missing skeletons\nsecond prose line\n\nS001C001P001R001A002\n")
    spec = get_format("ntu")
    assert ntu.read_missing_list(lst) == {"S001C001P001R001A002"}
    for opt in (str(lst), [lst], ["S001C001P001R001A002"], [str(lst), "S018C001P045R001A061"]):
        inputs, skipped = spec.list_inputs(d, {"missing_list": opt})
        assert "S001C001P001R001A002" in {Path(s["input"]).stem for s in skipped}
        assert "S001C001P001R001A002" not in {p.stem for p in inputs}
        assert all(s["reason"] for s in skipped)
    inputs, skipped = spec.list_inputs(d, {})
    assert len(inputs) == 3 and skipped == []
    samples = [s for p in inputs for s in spec.read(p, {})]
    assert spec.dataset({}, samples) == "ntu120"
    assert spec.dataset({}, samples[:2]) == "ntu60"
    assert spec.dataset({"dataset": "ntu120"}, samples[:2]) == "ntu120"
    with pytest.raises(DataFormatError, match="NTU-120 only"):
        spec.dataset({"dataset": "ntu60"}, samples)
    with pytest.raises(DataFormatError, match="does not exist"):
        spec.list_inputs(d, {"missing_list": str(tmp_path / "nope.txt")})


# ----------------------------------------------------------------------------------------------------------------
# Real NTU files (../shared/data/ntu_rgbd_samples)
# ----------------------------------------------------------------------------------------------------------------
FRAMES = {"S001C003P008R002A058": 70, "S002C001P003R001A003": 100, "S003C001P015R001A034": 71,
          "S004C002P003R001A017": 124}


@pytest.fixture(scope="module")
def ntu_dir() -> Path:
    return shared_dataset("ntu_rgbd_samples")


def test_real_ntu_files(ntu_dir):
    spec = get_format("ntu")
    inputs, skipped = spec.list_inputs(ntu_dir / "skeletons", {})
    assert len(inputs) == 15 and skipped == []
    samples = {}
    for p in inputs:
        (s,) = spec.read(p, {})
        validate_sample(s, num_joints=25, num_classes=120, source=str(p))
        samples[s.sample_id] = s
        m = ntu.parse_ntu_name(s.sample_id)
        assert (s.label, s.subject, s.view, s.setup, s.replication) == (
            m.action - 1, m.performer, m.camera, m.setup, m.replication)
        np.testing.assert_allclose(s.x[0, 0, ntu.SPINE_MID], 0.0, atol=1e-6)  # actor 1's spine-mid = origin
        header = int(p.read_text().split(None, 1)[0])
        assert s.x.shape[1] == header  # no frame without a body in these 15
    for name, t in FRAMES.items():
        assert samples[name].x.shape[1] == t
    assert samples["S001C003P008R002A058"].x.shape == (2, 70, 25, 3)
    assert samples["S001C003P008R002A058"].label == 57
    assert all(samples[n].x.shape[0] == 1 for n in samples if n != "S001C003P008R002A058")
    t_a = [samples[f"S001C001P001R001A{a:03d}"].x.shape[1] for a in range(1, 12)]
    assert min(t_a) == 54 and max(t_a) == 158
    assert spec.dataset({}, list(samples.values())) == "ntu60"


def test_real_first_joint_and_translation(ntu_dir):
    p = ntu_dir / "skeletons" / "S001C001P001R001A001.skeleton"
    bodies, n_frames, n_valid = ntu.read_skeleton_file(p)
    assert (n_frames, n_valid, len(bodies)) == (103, 103, 1)
    np.testing.assert_allclose(bodies[0].joints[0, 0], [0.2181153, 0.1725972, 3.785547], rtol=1e-6)
    (s,) = get_format("ntu").read(p, {})
    raw = bodies[0].joints
    np.testing.assert_allclose(s.x[0], raw - raw[0, 1], atol=1e-6)


def test_real_two_body_sample_has_two_distinct_ids(ntu_dir):
    bodies, n_frames, n_valid = ntu.read_skeleton_file(ntu_dir / "skeletons" / "S001C003P008R002A058.skeleton")
    assert n_frames == n_valid == 70 and len(bodies) == 2
    assert all(len(b.frames) == 70 for b in bodies)
    assert bodies[0].body_id != bodies[1].body_id


def test_real_crlf_and_lf_parse_alike(ntu_dir, tmp_path):
    crlf = ntu_dir / "skeletons" / "S001C001P001R001A006.skeleton"
    assert b"\r\n" in crlf.read_bytes()
    (s,) = get_format("ntu").read(crlf, {})
    assert s.x.shape == (1, 75, 25, 3)
    lf = ntu_dir / "skeletons" / "S001C001P001R001A001.skeleton"
    assert b"\r\n" not in lf.read_bytes()
    conv = tmp_path / lf.name
    conv.write_bytes(lf.read_bytes().replace(b"\n", b"\r\n"))
    np.testing.assert_array_equal(get_format("ntu").read(conv, {})[0].x, get_format("ntu").read(lf, {})[0].x)
    assert any(re.search(rb"\dE-\d", p.read_bytes()) for p in (ntu_dir / "skeletons").glob("*.skeleton"))


def test_real_missing_lists(ntu_dir):
    n60 = ntu.read_missing_list(ntu_dir / "NTU_RGBD_samples_with_missing_skeletons.txt")
    n120 = ntu.read_missing_list(ntu_dir / "NTU_RGBD120_samples_with_missing_skeletons.txt")
    assert (len(n60), len(n120)) == (302, 535)
    inputs, skipped = get_format("ntu").list_inputs(
        ntu_dir / "skeletons", {"missing_list": [str(ntu_dir / "NTU_RGBD120_samples_with_missing_skeletons.txt")]})
    assert len(inputs) == 15 and skipped == []  # none of the 15 is on a list


def _corrupt_real(src: Path, dst: Path, lineno: int, fn) -> Path:
    lines = src.read_text().splitlines()
    lines = fn(lines, lineno - 1)
    dst.write_text("\n".join(lines) + "\n")
    return dst


@pytest.mark.parametrize(
    "fn, lineno, what",
    [
        (lambda L, i: L[: i + 1], 1000, "truncated"),  # keep lines 1..1000 of 2782
        (lambda L, i: L[:i] + [" ".join(L[i].split()[:11])] + L[i + 1:], 5, "11 values"),
        (lambda L, i: L[:i] + [" ".join(["NaN"] + L[i].split()[1:])] + L[i + 1:], 40, "non-finite"),
        (lambda L, i: L[:i] + [" ".join(L[i].split()[:2] + ["abc"] + L[i].split()[3:])] + L[i + 1:], 100, "not a number"),
    ],
)
def test_real_corrupted_copies(ntu_dir, tmp_path, fn, lineno, what):
    src = ntu_dir / "skeletons" / "S001C001P001R001A001.skeleton"
    # lines 5, 40 and 100 are joint lines: 1 header + frames of 28 lines (count, body, 25-count, 25 joints)
    assert len(src.read_text().split("\n")[lineno - 1].split()) == 12 or what == "truncated"
    p = _corrupt_real(src, tmp_path / src.name, lineno, fn)
    with pytest.raises(DataFormatError) as e:
        get_format("ntu").read(p, {})
    assert e.value.source == str(p) and what in e.value.message
    expected_line = 1001 if what == "truncated" else lineno
    assert e.value.where == f"line {expected_line}", str(e.value)


# ----------------------------------------------------------------------------------------------------------------
# PKU-MMD
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pku_file() -> Path:
    return shared_dataset("pku_mmd_sample") / "A10N08-L.txt"


def test_pku_split_constants():
    assert len(pku.PKU1_XSUB_TEST) == 132 and "0291-L" in pku.PKU1_XSUB_TEST and "0290-L" not in pku.PKU1_XSUB_TEST
    assert len(pku.PKU2_XSUB_TEST) == 234 and "A26N07-R" in pku.PKU2_XSUB_TEST
    assert pku.xsub_split("A10N08-L", 2) == "train" and pku.xsub_split("A10N02-M", 2) == "test"
    assert pku.xsub_split("0334-R", 1) == "test" and pku.xsub_split("0002-L", 1) == "train"
    assert (pku.phase_of("0002-L"), pku.phase_of("A01N01-R"), pku.phase_of("A01N01")) == (1, 2, 0)


def test_pku_real_skeleton_facts(pku_file):
    skel = pku.read_skeleton_file(pku_file)
    assert skel.shape == (1040, 2, 25, 3)
    np.testing.assert_allclose(skel[0, 0, :2].reshape(-1), [-0.304560, 0.212575, 2.728912, -0.290664, 0.554507, 2.689121],
                               rtol=1e-6)
    body1 = np.any(skel[:, 0] != 0, axis=(1, 2))
    body2 = np.any(skel[:, 1] != 0, axis=(1, 2))
    assert body1.all() and int(body2.sum()) == 728 and int((~body2).sum()) == 312
    z = skel[:, 0, :, 2]
    assert 1.76 <= z.min() and z.max() <= 3.27 + 1e-6


def _pku_setup(tmp_path: Path, pku_file: Path, name: str, labels: str) -> tuple[Path, Path]:
    sk, lab = tmp_path / "skel", tmp_path / "labels"
    sk.mkdir(exist_ok=True)
    lab.mkdir(exist_ok=True)
    shutil.copyfile(pku_file, sk / f"{name}.txt")
    (lab / f"{name}.txt").write_text(labels)
    return sk, lab


def test_pku_segments_from_label_file(tmp_path, pku_file):
    skel = pku.read_skeleton_file(pku_file)
    body2 = np.any(skel[:, 1] != 0, axis=(1, 2))
    # the first run of frames where body 2 is absent throughout, and 30 frames where it is present throughout
    a0 = int(np.argmin(body2))
    a1 = a0
    while a1 + 1 < len(body2) and not body2[a1 + 1]:
        a1 += 1
    p0 = int(np.argmax(body2))
    assert body2[p0:p0 + 30].all()
    labels = f"5,{a0},{a1 + 1},1\n12,{p0},{p0 + 30},2\n41,0,1040,1\n"
    sk, lab = _pku_setup(tmp_path, pku_file, "A10N08-L", labels)
    spec = get_format("pku")
    inputs, skipped = spec.list_inputs(sk, {"labels_dir": str(lab)})
    assert [p.name for p in inputs] == ["A10N08-L.txt"] and skipped == []
    samples = spec.read(inputs[0], {"labels_dir": str(lab)})
    assert [s.sample_id for s in samples] == ["A10N08-L_001", "A10N08-L_002", "A10N08-L_003"]
    assert [s.label for s in samples] == [4, 11, 40]
    for s in samples:
        validate_sample(s, num_joints=25, num_classes=41, source="t")
        assert (s.subject, s.view, s.split) == (8, 1, "train")
        np.testing.assert_allclose(s.x[0, 0, pku.SPINE_MID], 0.0, atol=1e-6)
    assert samples[0].x.shape == (1, a1 + 1 - a0, 25, 3)
    assert samples[1].x.shape == (2, 30, 25, 3)
    assert samples[2].x.shape == (2, 1040, 25, 3)
    np.testing.assert_allclose(samples[1].x[1], skel[p0:p0 + 30, 1] - skel[p0, 0, 1], atol=1e-5)
    raw = spec.read(inputs[0], {"labels_dir": str(lab), "center": False})
    np.testing.assert_array_equal(raw[0].x[0], skel[a0:a1 + 1, 0])
    assert spec.dataset({}, samples) == "pku2"
    assert spec.dataset({"phase": 2}, samples) == "pku2"


def test_pku_unlabelled_file_skipped_and_split_file(tmp_path, pku_file):
    sk, lab = _pku_setup(tmp_path, pku_file, "A01N02-M", "3,0,50,1\n")
    shutil.copyfile(pku_file, sk / "A10N08-R.txt")  # no label file
    spec = get_format("pku")
    inputs, skipped = spec.list_inputs(sk, {"labels_dir": str(lab)})
    assert [p.name for p in inputs] == ["A01N02-M.txt"]
    assert len(skipped) == 1 and "A10N08-R" in skipped[0]["input"] and "no label file" in skipped[0]["reason"]
    (s,) = spec.read(inputs[0], {"labels_dir": str(lab)})
    assert (s.split, s.subject, s.view) == ("test", 2, 2)
    split = tmp_path / "cross_subject_v2.txt"
    split.write_text("Training\nA01N02-M.txt,A02N01-L.txt,\nValidation\nA01N05-L.txt\n")
    assert pku.read_split_file(split) == {"A01N02-M": "train", "A02N01-L": "train", "A01N05-L": "test"}
    (s,) = spec.read(inputs[0], {"labels_dir": str(lab), "split_file": str(split)})
    assert s.split == "train"
    with pytest.raises(DataFormatError, match="labels_dir"):
        spec.list_inputs(sk, {})


def test_pku_phase_option_and_mixing(tmp_path, pku_file):
    sk, lab = _pku_setup(tmp_path, pku_file, "0002-L", "51,0,10,1\n")
    spec = get_format("pku")
    (s,) = spec.read(sk / "0002-L.txt", {"labels_dir": str(lab)})
    assert (s.label, s.subject, s.view, s.split) == (50, -1, 1, "train") and spec.dataset({}, [s]) == "pku1"
    shutil.copyfile(pku_file, sk / "A10N08-L.txt")
    with pytest.raises(DataFormatError, match="mixed"):
        spec.list_inputs(sk, {"labels_dir": str(lab)})
    with pytest.raises(DataFormatError, match="phase"):
        spec.read(sk / "0002-L.txt", {"labels_dir": str(lab), "phase": 3})


@pytest.mark.parametrize(
    "labels, line, what",
    [
        ("5,0,10,1\n0,0,10,1\n", 2, "action 0"),
        ("42,0,10,1\n", 1, "action 42"),  # phase 2 has 41 classes
        ("5,20,10,1\n", 1, "<= start"),
        ("5,1000,1041,1\n", 1, "beyond"),
        ("5,-1,10,1\n", 1, "< 0"),
        ("5,0,10\n", 1, "3 fields"),
        ("5,0,x,1\n", 1, "non-integer"),
    ],
)
def test_pku_bad_label_rows(tmp_path, pku_file, labels, line, what):
    sk, lab = _pku_setup(tmp_path, pku_file, "A10N08-L", labels)
    with pytest.raises(DataFormatError) as e:
        get_format("pku").read(sk / "A10N08-L.txt", {"labels_dir": str(lab)})
    assert e.value.source == str(lab / "A10N08-L.txt") and e.value.where == f"line {line}" and what in e.value.message


@pytest.mark.parametrize(
    "fn, what",
    [
        (lambda r: r[:149], "149 values"),
        (lambda r: r[:10] + ["nan"] + r[11:], "non-finite"),
        (lambda r: r[:10] + ["abc"] + r[11:], "not a number"),
    ],
)
def test_pku_corrupted_skeleton(tmp_path, pku_file, fn, what):
    lines = pku_file.read_text().splitlines()
    lines[499] = " ".join(fn(lines[499].split()))
    p = tmp_path / "A10N08-L.txt"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError) as e:
        pku.read_skeleton_file(p)
    assert e.value.source == str(p) and e.value.where == "line 500" and what in e.value.message


def test_pku_segment_body_two_only():
    skel = np.zeros((10, 2, 25, 3), np.float32)
    skel[2:8, 1] = RNG.normal(size=(6, 25, 3))
    x = pku.segment_to_sample(skel, 0, 10)
    assert x.shape == (1, 6, 25, 3)
    np.testing.assert_allclose(x[0], skel[2:8, 1] - skel[2, 1, 1], atol=1e-6)
    assert pku.segment_to_sample(skel, 0, 2) is None
