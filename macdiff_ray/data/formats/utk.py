"""UTKinect-Action3D (``joints/joints_sSS_eEE.txt`` + ``actionLabel.txt``; see
shared/data/utkinect_action3d/PROVENANCE.md).

Each of the 20 recordings (10 subjects x 2) holds all 10 actions; ``actionLabel.txt`` gives, per recording, a
header ``sSS_eEE`` and 10 lines ``<action>: <startFrameID> <endFrameID>``. A joints line is ``frameID`` then
20 joints x (x, y, z) in metres, Kinect SDK v1 order (:data:`~macdiff_ray.data.layouts.KINECT_V1_20`). One
sample per labelled segment, id ``aAA_sSS_eEE`` (AA = 1-based class in file order):

- frames are selected by range, ``start <= frameID <= end`` (in 4 segments an end id is absent from the file);
- of consecutive rows sharing a frame id (542 pairs, up to about 4 cm apart) the first is kept;
- a segment whose interval is ``NaN`` (s10_e02 carry) is not read and is recorded as skipped with its reason,
  which leaves 199 segments.

``actionLabel.txt`` is looked for in the input folder and its parent (the input may be the dataset folder or its
``joints/`` folder). Option ``center`` (default true): translate each segment so that the spine joint of its
first frame is the origin, as the ``ucla`` and ``msr`` readers do.
"""

from __future__ import annotations

import functools
import math
import re
from pathlib import Path

import numpy as np

from macdiff_ray.data.formats import FormatSpec, files_matching
from macdiff_ray.data.layouts import KINECT_V1_20
from macdiff_ray.data.samples import DataFormatError, RawSample, center_on_joint, center_option

NAME_RE = re.compile(r"^joints_s(\d{2})_e(\d{2})$")
HEADER_RE = re.compile(r"^s(\d{2})_e(\d{2})$")
LABEL_FILE = "actionLabel.txt"
# Class order of actionLabel.txt (PROVENANCE); the file spells them in camelCase.
ACTION_KEYS = ("walk", "sitDown", "standUp", "pickUp", "carry", "throw", "push", "pull", "waveHands", "clapHands")
CLASS_NAMES = ("walk", "sit down", "stand up", "pick up", "carry", "throw", "push", "pull", "wave hands",
               "clap hands")
NUM_JOINTS = 20


def _label_file(input_path: Path) -> Path:
    root = Path(input_path)
    folder = root if root.is_dir() else root.parent
    for c in (folder / LABEL_FILE, folder.parent / LABEL_FILE):
        if c.is_file():
            return c
    raise DataFormatError(folder, "", f"{LABEL_FILE} not found in this folder or its parent")


@functools.lru_cache(maxsize=4)
def _parse_labels_cached(path: str, mtime_ns: int) -> dict[tuple[int, int], dict[str, tuple[float, float]]]:
    """``{(subject, recording): {action: (start, end)}}``; ``NaN`` bounds are kept as ``nan``."""
    out: dict[tuple[int, int], dict[str, tuple[float, float]]] = {}
    current: dict[str, tuple[float, float]] | None = None
    header_line = 0
    text = Path(path).read_text(encoding="ascii")
    for n, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if not s:
            continue
        m = HEADER_RE.match(s)
        if m:
            key = (int(m.group(1)), int(m.group(2)))
            if key in out:
                raise DataFormatError(path, f"line {n}", f"recording {s} appears twice")
            current, header_line = {}, n
            out[key] = current
            continue
        if current is None:
            raise DataFormatError(path, f"line {n}", f"expected a header sSS_eEE before {line!r}")
        name, sep, rest = s.partition(":")
        name, bounds = name.strip(), rest.split()
        if not sep or name not in ACTION_KEYS or len(bounds) != 2:
            raise DataFormatError(path, f"line {n}", f"expected '<action>: <start> <end>' with action in "
                                                     f"{list(ACTION_KEYS)}, got {line!r}")
        if name in current:
            raise DataFormatError(path, f"line {n}", f"action {name!r} given twice for this recording")
        try:
            start, end = float(bounds[0]), float(bounds[1])
        except ValueError as e:
            raise DataFormatError(path, f"line {n}", f"frame ids are not numbers: {line!r}") from e
        if not (math.isnan(start) or math.isnan(end)) and (start != int(start) or end != int(end) or end < start):
            raise DataFormatError(path, f"line {n}", f"expected integer frame ids with start <= end: {line!r}")
        current[name] = (start, end)
    for key, acts in out.items():
        if len(acts) != len(ACTION_KEYS):
            missing = [a for a in ACTION_KEYS if a not in acts]
            raise DataFormatError(path, f"recording s{key[0]:02d}_e{key[1]:02d}", f"missing actions {missing}")
    if not out:
        raise DataFormatError(path, f"line {header_line}", "no recording found")
    return out


def parse_labels(path: Path) -> dict[tuple[int, int], dict[str, tuple[float, float]]]:
    """Parse ``actionLabel.txt`` (cached per file and modification time)."""
    p = Path(path)
    try:
        return _parse_labels_cached(str(p), p.stat().st_mtime_ns)
    except UnicodeDecodeError as e:
        raise DataFormatError(p, f"byte {e.start}", "not ASCII text") from e


def _recording(path: Path) -> tuple[int, int]:
    m = NAME_RE.match(path.stem)
    if not m:
        raise DataFormatError(path, "file name", "expected joints_sSS_eEE.txt")
    return int(m.group(1)), int(m.group(2))


def _is_nan_interval(bounds: tuple[float, float]) -> bool:
    return math.isnan(bounds[0]) or math.isnan(bounds[1])


def list_inputs(input_path: Path, options: dict) -> tuple[list[Path], list[dict]]:
    root = Path(input_path)
    folder = root / "joints" if (root / "joints").is_dir() else root
    files = files_matching(folder, "joints_s*_e*.txt", "UTKinect joints_sSS_eEE.txt files")
    labels = parse_labels(_label_file(folder))
    inputs, skipped = [], []
    for f in files:
        key = _recording(f)
        if key not in labels:
            skipped.append({"input": str(f), "reason": f"recording s{key[0]:02d}_e{key[1]:02d} not in {LABEL_FILE}"})
            continue
        inputs.append(f)
        for a, bounds in labels[key].items():
            if _is_nan_interval(bounds):
                skipped.append({"input": f"{f}#a{ACTION_KEYS.index(a) + 1:02d}_s{key[0]:02d}_e{key[1]:02d}",
                                "reason": f"{LABEL_FILE} gives no interval for {a!r} (NaN)"})
    return inputs, skipped


def read_joints(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(frame_ids (R,) int64, x (R, 20, 3) float32)``: every row of a joints file, in file order."""
    try:
        text = path.read_text(encoding="ascii")
    except UnicodeDecodeError as e:
        raise DataFormatError(path, f"byte {e.start}", "not ASCII text") from e
    ids, rows = [], []
    for n, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 1 + NUM_JOINTS * 3:
            raise DataFormatError(path, f"line {n}", f"expected {1 + NUM_JOINTS * 3} numbers (frameID + "
                                                     f"{NUM_JOINTS} x 3), got {len(parts)}")
        try:
            fid = int(parts[0])
            rows.append([float(p) for p in parts[1:]])
        except ValueError as e:
            raise DataFormatError(path, f"line {n}", f"not a number: {line[:80]!r}") from e
        ids.append(fid)
    if not rows:
        raise DataFormatError(path, "", "no skeleton rows")
    return np.asarray(ids, np.int64), np.asarray(rows, np.float32).reshape(-1, NUM_JOINTS, 3)


def read(path: Path, options: dict) -> list[RawSample]:
    subject, rec = _recording(path)
    label_path = _label_file(path.parent)
    labels = parse_labels(label_path)
    if (subject, rec) not in labels:
        raise DataFormatError(label_path, "", f"no block s{subject:02d}_e{rec:02d} for {path.name}")
    ids, x = read_joints(path)  # (R,), (R, V, C)
    first = np.ones(len(ids), bool)
    first[1:] = ids[1:] != ids[:-1]  # duplicate ids are consecutive rows: keep the first of each run
    ids, x = ids[first], x[first]
    if len(np.unique(ids)) != len(ids):
        raise DataFormatError(path, "frame ids", "a frame id repeats on non-consecutive rows")
    center = center_option(options)
    out = []
    for a, (start, end) in labels[(subject, rec)].items():
        if math.isnan(start) or math.isnan(end):
            continue  # recorded as skipped by list_inputs
        label = ACTION_KEYS.index(a)
        sel = (ids >= start) & (ids <= end)  # (R,)
        sid = f"a{label + 1:02d}_s{subject:02d}_e{rec:02d}"
        if not sel.any():
            raise DataFormatError(path, f"segment {sid}", f"no frame with id in [{int(start)}, {int(end)}]")
        seg = x[sel][None]  # (1, T, V, C)
        if center:
            seg = center_on_joint(seg, KINECT_V1_20.center_joint)
        out.append(RawSample(sid, seg, label, subject=subject, replication=rec))
    return out


UTK_FORMAT = FormatSpec(
    name="utk",
    list_inputs=list_inputs,
    read=read,
    dataset=lambda options, samples: "utk",
    layout=KINECT_V1_20,
    num_classes=10,
    max_persons=1,
    option_names=frozenset({"center"}),
    class_names=CLASS_NAMES,
)
