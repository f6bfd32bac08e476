"""NTU RGB+D 60/120 raw ``.skeleton`` reader with the CTR-GCN-lineage denoising.

File format (see ``../shared/data/ntu_rgbd_samples/PROVENANCE.md``): whitespace-separated text, LF or CRLF::

    <numFrames>
    per frame:  <numBodies>                       (0, 1, 2 or, in the full dataset, > 2 noisy bodies)
      per body: <bodyID + 9 more values>          (10 values)
                <numJoints>                       (always 25)
                25 x <x y z depthX depthY colorX colorY oW oX oY oZ trackingState>   (12 values)

Only ``x y z`` (camera space, metres) are kept. Every structural fault (truncation, wrong value count, a
non-number, NaN/inf) raises :class:`DataFormatError` naming the file and the 1-based line.

Preprocessing (``docs/METHOD.md``, "NTU RGB+D preprocessing"; the CTR-GCN ``get_raw_denoised_data`` /
``seq_transformation`` pipeline that MAMP and MacDiff consume), applied by :func:`denoise_bodies` and
:func:`assemble_actors`:

1. Frames with no body are dropped; the remaining ("valid") frames are renumbered 0..T-1.
2. If the file holds more than one bodyID:
   a. bodies tracked in <= 11 valid frames are dropped (``NOISE_LEN_THRES``);
   b. while more than one body remains, a body whose frames are mostly "noisy" is dropped: a frame is noisy when
      the body's x-spread (max - min of x over the 25 joints) exceeds 0.8 times its y-spread
      (``NOISE_SPR_THRES1``); the body is dropped when noisy frames / its frames >= 0.69754
      (``NOISE_SPR_THRES2``). A body with some noisy frames that is kept has its motion lowered to
      ``min(motion, motion over its non-noisy frames)``;
   c. bodies are ranked by motion = sum over x, y, z of the variance of all its joint positions (all frames and
      joints pooled), largest first (stable for ties);
   d. the first is actor 1; each later body goes to actor 1 if its frame interval does not overlap actor 1's
      interval, else to actor 2 if it does not overlap actor 2's, else it is discarded (at most 2 actors).
   If a rule would drop every body, the rule is not applied (CTR-GCN would crash on such a file).
3. Frames in which every actor is absent (all joints exactly 0, e.g. all-zero Kinect bodies or frames that only
   held discarded bodies) are dropped. An actor 2 that is absent in every frame is removed (M = 1).
4. Translation: joint 2 (1-based; spine middle, index 1) of actor 1 in actor 1's first present frame becomes the
   origin. It is subtracted only from present (person, frame) entries, so absent frames stay exactly 0.

Deviations from the CTR-GCN code, on purpose (they only matter for rare multi-body files):
- a body's frames are placed at their true valid-frame indices (CTR-GCN assumes each body appears in consecutive
  valid frames and shifts a body that disappears and reappears);
- intervals overlap when they share at least one frame (CTR-GCN's ``min(end) - max(start) <= 0`` treats a single
  shared frame as no overlap, and starts actor 2's interval at frame 0);
- step 3 is applied to single-body files too, and "absent" is "all joints == 0" (CTR-GCN tests ``sum == 0``).

Sample names ``SsssCcccPpppRrrrAaaa`` give setup, camera (stored as ``view``), performer (``subject``),
replication and action (``label = action - 1``). The manifest dataset is ``ntu120`` when any sample has
setup > 17 or action > 60, else ``ntu60`` (option ``dataset`` forces one); the NTU-60 benchmarks on an NTU-120
preparation are the rows with ``setup <= 17 and label < 60``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from macdiff_ray.data.formats import FormatSpec, files_matching
from macdiff_ray.data.layouts import get_layout
from macdiff_ray.data.samples import DataFormatError, RawSample

__all__ = [
    "NTU_FORMAT",
    "NTU_NAME_RE",
    "NtuName",
    "BodyTrack",
    "parse_ntu_name",
    "parse_skeleton_text",
    "read_skeleton_file",
    "read_missing_list",
    "denoise_bodies",
    "assemble_actors",
    "preprocess",
    "NOISE_LEN_THRES",
    "NOISE_SPR_THRES1",
    "NOISE_SPR_THRES2",
]

NTU_NAME_RE = re.compile(r"^S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})$")
NUM_JOINTS = 25
BODY_VALUES = 10
JOINT_VALUES = 12
# CTR-GCN's thresholds (get_raw_denoised_data.py): length <= 11 frames; x-spread > 0.8 y-spread; ratio >= 0.69754.
NOISE_LEN_THRES = 11
NOISE_SPR_THRES1 = 0.8
NOISE_SPR_THRES2 = 0.69754
SPINE_MID = 1  # 0-based index of joint 2 ("middle of the spine")
NTU60_MAX_SETUP = 17
NTU60_NUM_CLASSES = 60


@dataclass(frozen=True)
class NtuName:
    """The fields of an NTU sample name ``SsssCcccPpppRrrrAaaa`` (all 1-based as written)."""

    setup: int
    camera: int
    performer: int
    replication: int
    action: int


def parse_ntu_name(name: str, source: str | Path | None = None) -> NtuName:
    """``"S001C002P003R002A013"`` -> :class:`NtuName`; :class:`DataFormatError` if the name does not match."""
    m = NTU_NAME_RE.match(name)
    if m is None:
        raise DataFormatError(source if source is not None else name, "file name",
                              f"{name!r} is not an NTU sample name SsssCcccPpppRrrrAaaa")
    s, c, p, r, a = (int(g) for g in m.groups())
    if min(s, c, p, r, a) < 1:
        raise DataFormatError(source if source is not None else name, "file name",
                              f"{name!r} has a zero field (all of S, C, P, R, A are 1-based)")
    return NtuName(s, c, p, r, a)


@dataclass
class BodyTrack:
    """One Kinect bodyID over the valid frames it appears in.

    Attributes:
        body_id: the bodyID string from the file.
        frames: int64 ``(n,)`` valid-frame indices (after dropping frames with no body), increasing.
        joints: float32 ``(n, 25, 3)`` x, y, z in metres.
        motion: sum over x, y, z of the variance of all joint positions (frames and joints pooled).
    """

    body_id: str
    frames: np.ndarray  # int64 (n,)
    joints: np.ndarray  # float32 (n, 25, 3)
    motion: float = 0.0


def _motion(joints: np.ndarray) -> float:
    """CTR-GCN's body motion: ``sum_c var(joints[..., c])`` over all frames and joints pooled. joints: (n, 25, 3)."""
    return float(np.var(joints.reshape(-1, 3).astype(np.float64), axis=0).sum())


def _int_line(tokens: list[str], lineno: int, source: str, what: str) -> int:
    if len(tokens) != 1:
        raise DataFormatError(source, f"line {lineno}", f"expected one integer ({what}), got {len(tokens)} values")
    try:
        v = int(tokens[0])
    except ValueError:
        raise DataFormatError(source, f"line {lineno}", f"expected an integer ({what}), got {tokens[0]!r}") from None
    if v < 0:
        raise DataFormatError(source, f"line {lineno}", f"{what} must be >= 0, got {v}")
    return v


def parse_skeleton_text(text: str, source: str | Path = "<text>") -> tuple[list[BodyTrack], int, int]:
    """Parse the text of one ``.skeleton`` file.

    Args:
        text: the whole file (LF or CRLF).
        source: file name used in error messages.

    Returns:
        ``(bodies, num_frames, num_valid_frames)``: one :class:`BodyTrack` per bodyID in order of first appearance
        (motion filled in), the frame count from the header and the number of frames with at least one body.

    Raises:
        DataFormatError: naming ``source`` and the 1-based line for truncation, a wrong value count, a value that
            is not a number, NaN/inf, a joint count other than 25, or data after the last frame.
    """
    source = str(source)
    lines = text.splitlines()
    n_lines = len(lines)
    if n_lines == 0 or not lines[0].strip():
        raise DataFormatError(source, "line 1", "empty file: expected the frame count")
    num_frames = _int_line(lines[0].split(), 1, source, "number of frames")

    i = 1  # 0-based index of the next line
    valid = 0  # valid (non-empty) frames seen so far
    joint_starts: list[int] = []  # 0-based line index of each body-frame's first joint line
    body_of: list[str] = []  # bodyID of each body-frame
    frame_of: list[int] = []  # valid-frame index of each body-frame

    def need(k: int, what: str) -> None:
        if i + k > n_lines:
            raise DataFormatError(source, f"line {n_lines + 1}",
                                  f"file truncated: expected {what} (frame count {num_frames} in line 1)")

    for f in range(num_frames):
        need(1, f"the body count of frame {f + 1}")
        nb = _int_line(lines[i].split(), i + 1, source, f"number of bodies in frame {f + 1}")
        i += 1
        for b in range(nb):
            need(1, f"the info line of body {b + 1} in frame {f + 1}")
            info = lines[i].split()
            if len(info) != BODY_VALUES:
                raise DataFormatError(source, f"line {i + 1}",
                                      f"body line has {len(info)} values, expected {BODY_VALUES}")
            body_id = info[0]
            i += 1
            need(1, f"the joint count of body {b + 1} in frame {f + 1}")
            nj = _int_line(lines[i].split(), i + 1, source, "number of joints")
            if nj != NUM_JOINTS:
                raise DataFormatError(source, f"line {i + 1}", f"joint count {nj}, expected {NUM_JOINTS}")
            i += 1
            need(NUM_JOINTS, f"{NUM_JOINTS} joint lines for body {b + 1} in frame {f + 1}")
            joint_starts.append(i)
            body_of.append(body_id)
            frame_of.append(valid)
            i += NUM_JOINTS
        if nb > 0:
            valid += 1
    for k in range(i, n_lines):
        if lines[k].strip():
            raise DataFormatError(source, f"line {k + 1}",
                                  f"unexpected data after the last of {num_frames} frames: {lines[k][:60]!r}")

    if not joint_starts:
        return [], num_frames, 0

    # All joint lines in one float conversion (fast path); on failure locate the offending line.
    idx = (np.asarray(joint_starts)[:, None] + np.arange(NUM_JOINTS)[None, :]).reshape(-1)  # (B*25,)
    rows = [lines[k].split() for k in idx]
    bad_count = [(k, len(r)) for k, r in zip(idx, rows) if len(r) != JOINT_VALUES]
    if bad_count:
        k, n = bad_count[0]
        raise DataFormatError(source, f"line {k + 1}", f"joint line has {n} values, expected {JOINT_VALUES}")
    try:
        vals = np.array(rows, dtype=np.float64)  # (B*25, 12)
    except ValueError:
        for k, r in zip(idx, rows):
            for tok in r:
                try:
                    float(tok)
                except ValueError:
                    raise DataFormatError(source, f"line {k + 1}", f"not a number: {tok!r}") from None
        raise  # pragma: no cover - unreachable: some token failed above
    finite = np.isfinite(vals).all(axis=1)  # (B*25,)
    if not finite.all():
        r = int(np.argmin(finite))
        raise DataFormatError(source, f"line {idx[r] + 1}", f"non-finite value in joint line: {lines[idx[r]].strip()!r}")
    xyz = vals[:, :3].astype(np.float32).reshape(-1, NUM_JOINTS, 3)  # (B, 25, 3) body-frames

    order: dict[str, list[int]] = {}
    for bf, bid in enumerate(body_of):
        order.setdefault(bid, []).append(bf)
    frame_arr = np.asarray(frame_of, dtype=np.int64)
    bodies = []
    for bid, bfs in order.items():
        frames = frame_arr[bfs]
        if np.any(np.diff(frames) <= 0):
            dup = int(frames[np.argmax(np.diff(frames) <= 0) + 1])
            raise DataFormatError(source, f"line {joint_starts[bfs[0]] - 1}",
                                  f"bodyID {bid} appears twice in valid frame {dup + 1}")
        j = xyz[bfs]
        bodies.append(BodyTrack(bid, frames, j, _motion(j)))
    return bodies, num_frames, valid


def read_skeleton_file(path: str | Path) -> tuple[list[BodyTrack], int, int]:
    """Read and parse one ``.skeleton`` file (see :func:`parse_skeleton_text`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="ascii")
    except UnicodeDecodeError as e:
        raise DataFormatError(path, f"byte {e.start}", "not an ASCII text file") from None
    return parse_skeleton_text(text, path)


def _noisy_frame_ratio(joints: np.ndarray) -> tuple[float, np.ndarray]:
    """Share of frames with x-spread > 0.8 y-spread, and the mask of non-noisy frames. joints: (n, 25, 3)."""
    spread = joints.max(axis=1) - joints.min(axis=1)  # (n, 3)
    noisy = spread[:, 0] > NOISE_SPR_THRES1 * spread[:, 1]  # (n,)
    return float(noisy.mean()), ~noisy


def denoise_bodies(bodies: list[BodyTrack]) -> list[BodyTrack]:
    """Steps 2a-2c of the module docstring: drop short and noisy bodies, rank the rest by motion (largest first).

    A single body is returned unchanged. Bodies are not modified except ``motion`` (lowered by step 2b).
    """
    if len(bodies) <= 1:
        return list(bodies)
    kept = [b for b in bodies if len(b.frames) > NOISE_LEN_THRES]
    if not kept:  # every body is short: keep them all rather than lose the sample
        kept = list(bodies)
    if len(kept) > 1:
        survivors = []
        remaining = len(kept)
        for b in kept:
            if remaining == 1:  # CTR-GCN stops the spread test once one body is left
                survivors.append(b)
                continue
            ratio, clean = _noisy_frame_ratio(b.joints)
            if ratio >= NOISE_SPR_THRES2:
                remaining -= 1
                continue
            if ratio > 0:
                b.motion = min(b.motion, _motion(b.joints[clean]))
            survivors.append(b)
        kept = survivors if survivors else kept
    return sorted(kept, key=lambda b: -b.motion)


def _overlaps(a: tuple[int, int] | None, b: tuple[int, int]) -> bool:
    """Inclusive frame intervals share at least one frame (``None`` = empty interval)."""
    return a is not None and max(a[0], b[0]) <= min(a[1], b[1])


def assemble_actors(ranked: list[BodyTrack], num_valid_frames: int) -> np.ndarray:
    """Steps 2d, 3 and 4: place ranked bodies into at most two actors, drop empty frames, translate.

    Args:
        ranked: bodies from :func:`denoise_bodies` (actor 1 first).
        num_valid_frames: frames with at least one body in the file.

    Returns:
        float32 ``(M, T, 25, 3)`` with M in {1, 2}, T >= 1 frames in which some actor is present.
    """
    if not ranked:
        raise ValueError("no body to assemble")
    out = np.zeros((2, num_valid_frames, NUM_JOINTS, 3), dtype=np.float32)  # (2, T, 25, 3)
    spans: list[tuple[int, int] | None] = [None, None]
    for k, b in enumerate(ranked):
        span = (int(b.frames[0]), int(b.frames[-1]))
        if k == 0 or not _overlaps(spans[0], span):
            actor = 0
        elif not _overlaps(spans[1], span):
            actor = 1
        else:
            continue  # overlaps both actors: a third person or a duplicate track
        out[actor, b.frames] = b.joints
        s = spans[actor]
        spans[actor] = span if s is None else (min(s[0], span[0]), max(s[1], span[1]))

    present = np.any(out != 0, axis=(2, 3))  # (2, T)
    keep = present.any(axis=0)  # (T,)
    if not keep.any():
        raise ValueError("every joint of every kept body is exactly zero")
    out, present = out[:, keep], present[:, keep]  # (2, T', 25, 3), (2, T')
    if not present[1].any():
        out, present = out[:1], present[:1]  # (1, T', 25, 3)
    if not present[0].any():  # only possible if actor 1 was all-zero while actor 2 was not: swap
        out, present = out[::-1].copy(), present[::-1]
        out, present = out[:1], present[:1]
    first = int(np.argmax(present[0]))
    origin = out[0, first, SPINE_MID].copy()  # (3,)
    out -= origin * present[:, :, None, None]  # absent entries stay exactly 0
    return out


def preprocess(bodies: list[BodyTrack], num_valid_frames: int) -> np.ndarray:
    """Denoise + assemble + translate: parsed bodies -> float32 ``(M, T, 25, 3)`` (module docstring, steps 1-4)."""
    return assemble_actors(denoise_bodies(bodies), num_valid_frames)


def read_missing_list(path: str | Path) -> frozenset[str]:
    """Sample names in an official ``*_samples_with_missing_skeletons.txt`` (header and blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, "option missing_list", "missing-skeleton list file does not exist")
    names = set()
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        s = line.strip()
        if NTU_NAME_RE.match(s):
            names.add(s)
    return frozenset(names)


def _missing_names(options: dict) -> frozenset[str]:
    """The ``missing_list`` option: a list file path, a sample name, or a list mixing both."""
    if "missing_list" not in options or options["missing_list"] is None:
        return frozenset()
    value = options["missing_list"]
    items: Iterable = [value] if isinstance(value, (str, Path)) else value
    if not isinstance(items, (list, tuple, set, frozenset)):
        raise DataFormatError("<options>", "option missing_list",
                              f"expected a path, a sample name or a list of them, got {type(value).__name__}")
    names: set[str] = set()
    for item in items:
        if not isinstance(item, (str, Path)):
            raise DataFormatError("<options>", "option missing_list", f"entry {item!r} is not a string or path")
        if isinstance(item, str) and NTU_NAME_RE.match(item.strip()):
            names.add(item.strip())
        else:
            names |= read_missing_list(item)
    return frozenset(names)


def _list_inputs(input_path: Path, options: dict) -> tuple[list[Path], list[dict]]:
    files = files_matching(Path(input_path), "*.skeleton", "NTU .skeleton files")
    missing = _missing_names(options)
    inputs, skipped = [], []
    for f in files:
        if f.stem in missing:
            skipped.append({"input": str(f), "reason": "on the official missing-skeleton list"})
        else:
            inputs.append(f)
    return inputs, skipped


def _read(path: Path, options: dict) -> list[RawSample]:
    path = Path(path)
    name = path.name[: -len(".skeleton")] if path.name.endswith(".skeleton") else path.stem
    meta = parse_ntu_name(name, path)
    bodies, _, n_valid = read_skeleton_file(path)
    if not bodies:
        raise DataFormatError(path, "", "no body in any frame (is the sample on the missing-skeleton list?)")
    try:
        x = preprocess(bodies, n_valid)  # (M, T, 25, 3)
    except ValueError as e:
        raise DataFormatError(path, "", str(e)) from None
    return [
        RawSample(
            sample_id=name,
            x=x,
            label=meta.action - 1,
            subject=meta.performer,
            view=meta.camera,
            setup=meta.setup,
            replication=meta.replication,
        )
    ]


def _dataset(options: dict, samples: list[RawSample]) -> str:
    wanted = options["dataset"] if "dataset" in options else "auto"
    if wanted not in ("auto", "ntu60", "ntu120"):
        raise DataFormatError("<options>", "option dataset", f"expected 'auto', 'ntu60' or 'ntu120', got {wanted!r}")
    beyond = [s.sample_id for s in samples if s.setup > NTU60_MAX_SETUP or s.label >= NTU60_NUM_CLASSES]
    if wanted == "ntu60" and beyond:
        raise DataFormatError("<options>", "option dataset",
                              f"'ntu60' asked but {len(beyond)} sample(s) are NTU-120 only, e.g. {beyond[0]}")
    if wanted != "auto":
        return wanted
    return "ntu120" if beyond else "ntu60"


NTU_FORMAT = FormatSpec(
    name="ntu",
    list_inputs=_list_inputs,
    read=_read,
    dataset=_dataset,
    layout=get_layout("ntu25"),
    num_classes=120,
    max_persons=2,
    option_names=frozenset({"missing_list", "dataset"}),
    fps=30.0,  # Kinect v2 (ntu_rgbd_samples/PROVENANCE.md)
    classes_by_dataset={"ntu60": 60, "ntu120": 120},
)
