"""PKU-MMD (phase 1 and phase 2) raw skeleton + label reader.

Skeleton file (``../shared/data/pku_mmd_sample/PROVENANCE.md``): one line per frame (line 1 = frame 0), 150
whitespace-separated floats = 2 bodies x 25 Kinect v2 joints (NTU order) x (x, y, z) in metres; an absent body is
written as 75 zeros. Label file (same file name, in the ``labels_dir`` option's folder): one row per action
instance, ``action_id,start_frame,end_frame,confidence``; ``action_id`` is 1-based.

Segment convention: frames ``start .. end - 1`` (0-based start, exclusive end, so ``end`` may equal the frame
count), as the public PKU-MMD loaders read the labels. A row with ``end <= start``, ``start < 0``,
``end > frames`` or an action outside ``[1, num_classes]`` is an error naming the label file and line.

Each labelled segment becomes one :class:`RawSample`:
- persons: a body is present in the segment when any of its values is non-zero; absent bodies are left out
  (M = 1 or 2; body 2 alone becomes person 1);
- frames where no body is present are dropped (as NTU frames with no body are);
- if the ``center`` option is true (default), actor 1's joint 2 (spine middle) in its first present frame is
  subtracted from every present (person, frame) entry, the same translation as the NTU preprocessing (absent
  entries stay 0);
- ``sample_id`` = ``<video>_<label-line:03d>``, e.g. ``A10N08-L_004``; ``view`` = 1/2/3 for L/M/R;
  ``subject`` = performer ``Nyy`` for phase 2, -1 for phase 1 (its names carry no subject);
  ``split`` = ``train``/``test`` of the cross-subject benchmark (see below).

Phases: names ``dddd-V`` are phase 1 (51 classes, dataset ``pku1``), ``AxxNyy-V`` phase 2 (41 classes,
dataset ``pku2``). The ``phase`` option (1 or 2) forces one; otherwise it is inferred from the file names and a
mixture is an error.

Cross-subject split (the ``split`` column; the ``pku1-xsub``/``pku2-xsub`` benchmarks filter on it). The official
``cross-subject.txt`` / ``cross_subject_v2.txt`` (form ``Training\\n<ids>\\nValidation\\n<ids>``) were not found in a
stored copy. Their Validation lists are known here only through one third-party transcription
(Adamink/ViewAdaptiveLSTM, ``scripts/gen_v1.py`` and ``scripts/gen_v2.py``, constant ``cs_valid_names``):
- phase 1 test videos: ``0291`` .. ``0334``, all three views (:data:`PKU1_XSUB_TEST`, 132 ids);
- phase 2 test videos: performers ``N02``, ``N03``, ``N07`` in all 26 sequences and three views
  (:data:`PKU2_XSUB_TEST`, 234 ids; 3 of 13 performers).
Training = every other labelled video (the official Training line lists the released files not in Validation;
the released file set itself is not known here, so no TRAIN constant is enumerated: :func:`xsub_split` is the
rule). Pass the official file as the ``split_file`` option to override: then a video in neither of its lists
gets split ``""`` and belongs to no benchmark split.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from macdiff_ray.data.formats import FormatSpec, files_matching
from macdiff_ray.data.layouts import get_layout
from macdiff_ray.data.samples import DataFormatError, RawSample

__all__ = [
    "PKU_FORMAT",
    "PKU1_NAME_RE",
    "PKU2_NAME_RE",
    "PKU1_XSUB_TEST",
    "PKU2_XSUB_TEST",
    "PKU2_XSUB_TEST_PERFORMERS",
    "PKU2_TRAIN_SUBJECTS",
    "PKU2_TEST_SUBJECTS",
    "PKU_NUM_CLASSES",
    "VIEW_IDS",
    "phase_of",
    "xsub_split",
    "read_split_file",
    "read_skeleton_file",
    "read_label_file",
    "segment_to_sample",
]

PKU1_NAME_RE = re.compile(r"^(\d{4})-([LMR])$")
PKU2_NAME_RE = re.compile(r"^A(\d{2})N(\d{2})-([LMR])$")
PKU_NUM_CLASSES = {1: 51, 2: 41}
VIEW_IDS = {"L": 1, "M": 2, "R": 3}
NUM_VALUES = 150  # 2 bodies x 25 joints x 3
NUM_JOINTS = 25
SPINE_MID = 1

# Cross-subject test ("Validation") videos; source and caveats in the module docstring.
PKU1_XSUB_TEST: frozenset[str] = frozenset(f"{v:04d}-{view}" for v in range(291, 335) for view in "LMR")
PKU2_XSUB_TEST_PERFORMERS: frozenset[int] = frozenset({2, 3, 7})
# Phase 2 has 13 performers (N01..N13, PKU-MMD paper). These two sets give the same split as the ``split`` column
# for phase 2 through the ``subject`` column; phase 1 names carry no performer, so only ``split`` serves pku1.
PKU2_TEST_SUBJECTS: frozenset[int] = PKU2_XSUB_TEST_PERFORMERS
PKU2_TRAIN_SUBJECTS: frozenset[int] = frozenset(range(1, 14)) - PKU2_XSUB_TEST_PERFORMERS
PKU2_XSUB_TEST: frozenset[str] = frozenset(
    f"A{a:02d}N{n:02d}-{view}" for a in range(1, 27) for n in sorted(PKU2_XSUB_TEST_PERFORMERS) for view in "LMR"
)


def phase_of(video: str) -> int:
    """1 for ``dddd-V``, 2 for ``AxxNyy-V``, 0 if the name is neither."""
    if PKU1_NAME_RE.match(video):
        return 1
    if PKU2_NAME_RE.match(video):
        return 2
    return 0


def xsub_split(video: str, phase: int) -> str:
    """``"test"`` if ``video`` (e.g. ``"0291-L"``, ``"A01N02-M"``) is a cross-subject test video, else ``"train"``."""
    test = PKU1_XSUB_TEST if phase == 1 else PKU2_XSUB_TEST
    return "test" if video in test else "train"


def read_split_file(path: str | Path) -> dict[str, str]:
    """An official PKU-MMD split file -> ``{video: "train" | "test"}``.

    Format: a ``Training`` line, a comma-separated line of ``<video>.txt`` (or bare ids), a ``Validation`` line,
    a comma-separated line; blank lines ignored.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, "option split_file", "split file does not exist")
    lines = [(n + 1, ln.strip()) for n, ln in enumerate(path.read_text(encoding="utf-8").splitlines()) if ln.strip()]
    heads = {"training": "train", "validation": "test", "testing": "test", "test": "test", "train": "train"}
    out: dict[str, str] = {}
    current: str | None = None
    for n, ln in lines:
        key = ln.rstrip(":").lower()
        if key in heads:
            current = heads[key]
            continue
        if current is None:
            raise DataFormatError(path, f"line {n}", f"expected a 'Training' or 'Validation' header, got {ln[:40]!r}")
        for item in ln.split(","):
            vid = item.strip()
            if vid.endswith(".txt"):
                vid = vid[:-4]
            if not vid:
                continue
            if vid in out and out[vid] != current:
                raise DataFormatError(path, f"line {n}", f"video {vid!r} is in both the training and test lists")
            out[vid] = current
    if not out:
        raise DataFormatError(path, "", "no video ids found")
    return out


def read_skeleton_file(path: str | Path) -> np.ndarray:
    """One PKU-MMD skeleton file -> float32 ``(T, 2, 25, 3)`` (frames, bodies, joints, xyz).

    Raises :class:`DataFormatError` naming the file and 1-based line for a line without exactly 150 values, a
    value that is not a number, NaN/inf, or an empty file.
    """
    path = Path(path)
    text = path.read_text(encoding="ascii", errors="replace")
    lines = text.splitlines()
    while lines and not lines[-1].strip():  # trailing blank lines
        lines.pop()
    if not lines:
        raise DataFormatError(path, "line 1", f"empty skeleton file: expected lines of {NUM_VALUES} values")
    rows = [ln.split() for ln in lines]
    for n, r in enumerate(rows):
        if len(r) != NUM_VALUES:
            raise DataFormatError(path, f"line {n + 1}", f"{len(r)} values, expected {NUM_VALUES} (2 bodies x 25 x 3)")
    try:
        vals = np.array(rows, dtype=np.float64)  # (T, 150)
    except ValueError:
        for n, r in enumerate(rows):
            for tok in r:
                try:
                    float(tok)
                except ValueError:
                    raise DataFormatError(path, f"line {n + 1}", f"not a number: {tok!r}") from None
        raise  # pragma: no cover
    finite = np.isfinite(vals).all(axis=1)  # (T,)
    if not finite.all():
        n = int(np.argmin(finite))
        raise DataFormatError(path, f"line {n + 1}", "non-finite value (NaN or inf)")
    return vals.astype(np.float32).reshape(len(rows), 2, NUM_JOINTS, 3)  # (T, 2, 25, 3)


def read_label_file(path: str | Path, num_frames: int, num_classes: int) -> list[tuple[int, int, int, int]]:
    """A label file -> ``[(line, action0, start, end)]`` with ``action0`` 0-based and frames ``[start, end)``.

    Raises :class:`DataFormatError` naming the file and line for a row that is not 4 integers, an action outside
    ``[1, num_classes]``, ``start < 0``, ``end <= start`` or ``end > num_frames``.
    """
    path = Path(path)
    out = []
    for n, ln in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        s = ln.strip()
        if not s:
            continue
        parts = [p.strip() for p in s.split(",")]
        if parts and parts[-1] == "":  # a trailing comma
            parts = parts[:-1]
        if len(parts) != 4:
            raise DataFormatError(path, f"line {n}", f"expected 'action,start,end,confidence', got {len(parts)} fields")
        try:
            action, start, end, _conf = (int(p) for p in parts)
        except ValueError:
            raise DataFormatError(path, f"line {n}", f"non-integer field in {s!r}") from None
        if not 1 <= action <= num_classes:
            raise DataFormatError(path, f"line {n}", f"action {action} outside [1, {num_classes}]")
        if start < 0:
            raise DataFormatError(path, f"line {n}", f"start frame {start} < 0")
        if end <= start:
            raise DataFormatError(path, f"line {n}", f"end frame {end} <= start frame {start} (empty segment)")
        if end > num_frames:
            raise DataFormatError(path, f"line {n}",
                                  f"end frame {end} beyond the skeleton file's {num_frames} frames (end is exclusive)")
        out.append((n, action - 1, start, end))
    if not out:
        raise DataFormatError(path, "", "label file holds no segment")
    return out


def segment_to_sample(skel: np.ndarray, start: int, end: int, *, center: bool = True) -> np.ndarray | None:
    """Frames ``[start, end)`` of a ``(T, 2, 25, 3)`` skeleton -> float32 ``(M, T', 25, 3)``, or None if empty.

    Absent bodies and frames without any body are removed; with ``center`` actor 1's spine middle in its first
    present frame becomes the origin of every present entry.
    """
    seg = np.ascontiguousarray(skel[start:end].transpose(1, 0, 2, 3))  # (2, t, 25, 3)
    present = np.any(seg != 0, axis=(2, 3))  # (2, t)
    bodies = present.any(axis=1)  # (2,)
    if not bodies.any():
        return None
    seg, present = seg[bodies], present[bodies]  # (M, t, 25, 3), (M, t)
    keep = present.any(axis=0)  # (t,)
    seg, present = seg[:, keep], present[:, keep]  # (M, T', 25, 3)
    if center:
        first = int(np.argmax(present[0]))
        origin = seg[0, first, SPINE_MID].copy()  # (3,)
        seg = seg - origin * present[:, :, None, None]
    return seg.astype(np.float32, copy=False)


def _phase(options: dict, videos: list[str], source: Path) -> int:
    if "phase" in options and options["phase"] is not None:
        p = options["phase"]
        if isinstance(p, bool) or p not in (1, 2):
            raise DataFormatError(source, "option phase", f"expected 1 or 2, got {p!r}")
        return int(p)
    phases = {phase_of(v) for v in videos}
    if 0 in phases:
        bad = next(v for v in videos if phase_of(v) == 0)
        raise DataFormatError(source, "file name", f"{bad!r} is neither a phase-1 (dddd-V) nor a phase-2 (AxxNyy-V) name")
    if len(phases) != 1:
        raise DataFormatError(source, "option phase", "phase-1 and phase-2 files are mixed; set phase=1 or phase=2")
    return phases.pop()


def _labels_dir(options: dict, source: Path) -> Path:
    if "labels_dir" not in options or options["labels_dir"] is None:
        raise DataFormatError(source, "option labels_dir", "required: the folder of PKU-MMD label files")
    d = Path(options["labels_dir"])
    if not d.is_dir():
        raise DataFormatError(d, "option labels_dir", "label folder does not exist")
    return d


def _list_inputs(input_path: Path, options: dict) -> tuple[list[Path], list[dict]]:
    files = files_matching(Path(input_path), "*.txt", "PKU-MMD skeleton files (*.txt)")
    labels = _labels_dir(options, Path(input_path))
    _phase(options, [f.stem for f in files], Path(input_path))
    inputs, skipped = [], []
    for f in files:
        if (labels / f.name).is_file():
            inputs.append(f)
        else:
            skipped.append({"input": str(f), "reason": f"no label file {labels / f.name}"})
    return inputs, skipped


def _read(path: Path, options: dict) -> list[RawSample]:
    path = Path(path)
    video = path.stem
    phase = _phase(options, [video], path)
    m = (PKU1_NAME_RE if phase == 1 else PKU2_NAME_RE).match(video)
    if m is None:
        raise DataFormatError(path, "file name", f"{video!r} is not a phase-{phase} PKU-MMD name")
    view = VIEW_IDS[m.groups()[-1]]
    subject = int(m.group(2)) if phase == 2 else -1
    if "split_file" in options and options["split_file"] is not None:
        split = read_split_file(options["split_file"]).get(video, "")
    else:
        split = xsub_split(video, phase)
    center = bool(options["center"]) if "center" in options else True
    skel = read_skeleton_file(path)  # (T, 2, 25, 3)
    label_path = _labels_dir(options, path) / path.name
    if not label_path.is_file():
        raise DataFormatError(path, "", f"no label file {label_path}")
    samples = []
    for line, action0, start, end in read_label_file(label_path, skel.shape[0], PKU_NUM_CLASSES[phase]):
        x = segment_to_sample(skel, start, end, center=center)  # (M, T', 25, 3)
        if x is None:
            raise DataFormatError(label_path, f"line {line}", f"no skeleton in frames [{start}, {end}) of {path.name}")
        samples.append(RawSample(sample_id=f"{video}_{line:03d}", x=x, label=action0, subject=subject,
                                 view=view, split=split))
    return samples


def _dataset(options: dict, samples: list[RawSample]) -> str:
    if "phase" in options and options["phase"] is not None:
        return f"pku{int(options['phase'])}"
    phases = {phase_of(s.sample_id.rsplit("_", 1)[0]) for s in samples}
    if len(phases) != 1 or 0 in phases:
        raise DataFormatError("<samples>", "option phase", f"cannot tell the PKU-MMD phase from the samples: {phases}")
    return f"pku{phases.pop()}"


PKU_FORMAT = FormatSpec(
    name="pku",
    list_inputs=_list_inputs,
    read=_read,
    dataset=_dataset,
    layout=get_layout("ntu25"),
    num_classes=51,
    max_persons=2,
    option_names=frozenset({"labels_dir", "phase", "split_file", "center"}),
    fps=30.0,  # the official PKU-MMD README (pku_mmd_sample/PROVENANCE.md)
    classes_by_dataset={"pku1": 51, "pku2": 41},
)
