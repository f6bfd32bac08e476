"""The raw-sample contract shared by every format reader.

A reader turns one input file into a list of :class:`RawSample`; :func:`validate_sample` checks each one before
it can reach a shard. Every error a reader raises is a :class:`DataFormatError` that names the file and the line
or field, so a user can open the file and find the fault.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["RawSample", "DataFormatError", "validate_sample"]


@dataclass
class RawSample:
    """One sequence (all its persons) as read from a source file.

    Attributes:
        sample_id: source name, e.g. ``S001C001P001R001A001`` or ``a01_s01_e00_v01``; unique within a dataset.
        x: float32 ``(M, T, V, C)``: persons, valid frames, joints, coordinates, in metres. ``M >= 1`` persons
            present (no all-zero padding persons), ``T >= 1`` valid frames (no padding frames).
        label: 0-based class index.
        subject / view / setup / replication: ids from the source (``-1`` if unknown).
        split: stored split for the ``custom`` benchmark (``"train"``, ``"test"`` or ``""``).
    """

    sample_id: str
    x: np.ndarray  # float32 (M, T, V, C)
    label: int
    subject: int = -1
    view: int = -1
    setup: int = -1
    replication: int = -1
    split: str = ""


class DataFormatError(ValueError):
    """A source file does not match its format. ``str()`` is ``"<file>: <where>: <message>"``.

    Args:
        source: the offending file (or input folder).
        where: ``"line N"``, ``"field F"``, ``"sample S"``, ... (may be empty).
        message: what is wrong, with the offending value.
    """

    def __init__(self, source: str | Path, where: str, message: str):
        self.source = str(source)
        self.where = where
        self.message = message
        text = f"{self.source}: {where}: {message}" if where else f"{self.source}: {message}"
        super().__init__(text)

    def __reduce__(self):  # keep the three-argument constructor picklable (Ray, multiprocessing)
        return (DataFormatError, (self.source, self.where, self.message))


def validate_sample(s: RawSample, *, num_joints: int, num_classes: int | None, source: str) -> None:
    """Check a :class:`RawSample` against the contract; raise :class:`DataFormatError` naming ``source``.

    Checks: ``x`` is a 4-D ``(M, T, V, C)`` float array with ``M >= 1``, ``T >= 1``, ``V == num_joints``,
    ``C == 3``; every value finite (no NaN/inf); ``label`` in ``[0, num_classes)`` (when ``num_classes`` given);
    a non-empty ``sample_id``; ``split`` in ``{"", "train", "test"}``.
    """
    where = f"sample {s.sample_id!r}"
    if not isinstance(s.sample_id, str) or not s.sample_id:
        raise DataFormatError(source, "field sample_id", f"empty or non-string sample id {s.sample_id!r}")
    x = s.x
    if not isinstance(x, np.ndarray):
        raise DataFormatError(source, where, f"x must be a numpy array, got {type(x).__name__}")
    if x.ndim != 4:
        raise DataFormatError(source, where, f"x must be (M, T, V, C), got shape {tuple(x.shape)}")
    m, t, v, c = x.shape
    if m < 1:
        raise DataFormatError(source, where, "no person present (M = 0)")
    if t < 1:
        raise DataFormatError(source, where, "empty sequence (T = 0 frames)")
    if v != num_joints:
        raise DataFormatError(source, where, f"wrong joint count: {v} joints, expected {num_joints}")
    if c != 3:
        raise DataFormatError(source, where, f"wrong coordinate count: C = {c}, expected 3")
    if not np.issubdtype(x.dtype, np.floating):
        raise DataFormatError(source, where, f"x must be floating point, got dtype {x.dtype}")
    finite = np.isfinite(x)
    if not finite.all():
        bad = np.argwhere(~finite)[0]
        raise DataFormatError(
            source, where, f"non-finite value {x[tuple(bad)]!r} at (person, frame, joint, coord) = {tuple(int(i) for i in bad)}"
        )
    if isinstance(s.label, bool) or not isinstance(s.label, (int, np.integer)):
        raise DataFormatError(source, where, f"label must be an integer, got {s.label!r}")
    if s.label < 0 or (num_classes is not None and s.label >= num_classes):
        raise DataFormatError(
            source, where, f"label {int(s.label)} out of range [0, {num_classes if num_classes is not None else 'inf'})"
        )
    if s.split not in ("", "train", "test"):
        raise DataFormatError(source, where, f"split must be 'train', 'test' or '', got {s.split!r}")


def center_on_joint(x: np.ndarray, joint: int) -> np.ndarray:
    """Translate a sample so that actor 1's ``joint`` in its first frame is the origin.

    x: (M, T, V, C) metres. Absent persons' all-zero frames stay zero (they are not data), as in the common NTU
    preprocessing (CTR-GCN lineage); random rotations in the training transforms then turn the body about its own
    centre instead of swinging it around the camera (NW-UCLA's mean depth is 2.65 m).
    """
    if x.shape[1] == 0:
        return x
    origin = x[0, 0, joint].copy()  # (C,)
    present = np.any(x != 0, axis=(2, 3), keepdims=True)  # (M, T, 1, 1)
    return np.where(present, x - origin, x).astype(np.float32)


def center_on_body(x: np.ndarray, joint: int | None) -> np.ndarray:
    """Translate a sample so that actor 1's ``joint`` (``None``: the mean of its joints) in its first tracked
    frame is the origin; for data whose first frames may be empty (the ``arrays`` format).

    x: (M, T, V, C) metres. All-zero (untracked) frames stay zero, as in :func:`center_on_joint`.
    """
    first = _first_tracked_frame(x)  # (V, C) float64
    if first is None:
        return x
    origin = (first.mean(axis=0) if joint is None else first[joint]).astype(x.dtype)  # (C,)
    present = np.any(x != 0, axis=(2, 3), keepdims=True)  # (M, T, 1, 1)
    return np.where(present, x - origin, x).astype(np.float32)


AXES = {"x": 0, "y": 1, "z": 2}
# Joint-name pairs whose right -> left vector gives a body's facing (hips first, then shoulders); a layout needs one.
FACING_PAIRS = (("left_hip", "right_hip"), ("left_shoulder", "right_shoulder"))


def facing_joints(layout, mode: str | None = None) -> tuple[tuple[int, int], ...]:
    """The (left, right) joint index pairs of ``layout`` that :func:`face_forward` averages (and
    :func:`stand_upright` reads as hips, shoulders); raises ValueError naming the layout when it has none of
    :data:`FACING_PAIRS`, or, for align ``mode`` "full", when it lacks either one."""
    names = {n: i for i, n in enumerate(layout.joint_names)}
    pairs = tuple((names[a], names[b]) for a, b in FACING_PAIRS if a in names and b in names)
    if not pairs:
        raise ValueError(f"option align: layout {layout.name!r} names none of the joint pairs {list(FACING_PAIRS)}, "
                         f"so a body's facing is unknown; give a layout JSON with them or leave align off")
    if mode == "full" and len(pairs) != len(FACING_PAIRS):
        raise ValueError(f"option align=full: layout {layout.name!r} needs both a hip and a shoulder "
                         f"pair {list(FACING_PAIRS)} for the body's up vector; use align=true")
    return pairs


def _first_tracked_frame(x: np.ndarray) -> np.ndarray | None:
    """Actor 1's first frame with a nonzero joint, as float64 (V, C), or None when it has none."""
    tracked = np.flatnonzero(np.any(x[0] != 0, axis=(1, 2))) if x.shape[1] else []  # (T_tracked,)
    return x[0, tracked[0]].astype(np.float64) if len(tracked) else None


def _rotate_tracked(x: np.ndarray, rot: np.ndarray) -> np.ndarray:
    """x (M, T, V, C) with each point turned by the 3x3 ``rot``; all-zero (untracked) frames stay zero."""
    present = np.any(x != 0, axis=(2, 3), keepdims=True)  # (M, T, 1, 1)
    return np.where(present, x @ rot.T.astype(np.float32), x).astype(np.float32)


def face_forward(x: np.ndarray, pairs: tuple[tuple[int, int], ...], up: int = 1) -> np.ndarray:
    """Rotate a sample about the ``up`` axis through the origin so that actor 1's facing in its first tracked
    frame is the same for every sample: the sum of its right -> left vectors over ``pairs`` (hips, shoulders),
    projected on the plane normal to ``up``, points along +x (+y when x is up).

    This is the yaw part of the view-invariant preprocessing of VA-RNN and Predict & Cluster: it removes the camera's
    azimuth (NW-UCLA's three views), and keeps the motion, the body's height axis and any turning during the
    sequence. x: (M, T, V, C) metres, usually centred first (then the body turns in place). All-zero (untracked)
    frames stay zero; a sample without a tracked frame, or whose facing vector is vertical, is returned unchanged.
    """
    first = _first_tracked_frame(x)
    if first is None:
        return x
    v = sum(first[left] - first[right] for left, right in pairs)  # (C,)
    a, b = [k for k in range(3) if k != up]  # the horizontal plane: v is turned onto +a (x, or y when x is up)
    if np.hypot(v[a], v[b]) < 1e-9:
        return x
    angle = np.arctan2(v[b], v[a])  # of v from axis a, towards axis b
    c, s = np.cos(angle), np.sin(angle)
    rot = np.eye(3)
    rot[a, a], rot[a, b], rot[b, a], rot[b, b] = c, s, -s, c  # turns v onto +a
    return _rotate_tracked(x, rot)


def stand_upright(x: np.ndarray, pairs: tuple[tuple[int, int], ...]) -> np.ndarray:
    """Rotate a sample through the origin so that actor 1's body in its first tracked frame stands along +y (the
    vector from its hips' midpoint to its shoulders' midpoint) and faces +x (its right -> left hip and shoulder
    vectors, summed and made normal to that up vector).

    :func:`face_forward` about y removes a camera's azimuth only; this also removes its elevation and roll (the
    full view-invariant transform of VA-RNN and Predict & Cluster, with the body's own axes from its first frame).
    ``pairs`` must be (hips, shoulders), as :func:`facing_joints` gives them for mode "full". x: (M, T, V,
    C) metres. All-zero frames stay zero; a sample without a tracked frame, or whose facing is parallel to its up
    vector, is returned unchanged.
    """
    if len(pairs) != 2:
        raise ValueError(f"option align=full needs a hip pair and a shoulder pair (the body's up vector), got {pairs}")
    first = _first_tracked_frame(x)
    if first is None:
        return x
    (lh, rh), (ls, rs) = pairs
    up = (first[ls] + first[rs] - first[lh] - first[rh]) / 2  # (C,) hips' midpoint -> shoulders' midpoint
    facing = sum(first[left] - first[right] for left, right in pairs)  # (C,)
    if np.linalg.norm(up) < 1e-9:
        return x
    up = up / np.linalg.norm(up)
    facing = facing - (facing @ up) * up
    if np.linalg.norm(facing) < 1e-9:
        return x
    facing = facing / np.linalg.norm(facing)
    rot = np.stack([facing, up, np.cross(facing, up)])  # (3, 3) rows: the new x, y, z; a proper rotation
    return _rotate_tracked(x, rot)


ALIGN_MODES = ("x", "y", "z", "full")  # the manifest's "align" values besides None


def align_option(options: dict) -> str | None:
    """Option ``align`` (default false): ``true`` (= ``y``, the Kinect readers' up axis) or ``x``/``y``/``z``
    turns each sample with :func:`face_forward` about that axis; ``full`` turns it with :func:`stand_upright`.
    Returns the mode (an entry of :data:`ALIGN_MODES`, what the manifest records) or None."""
    value = options.get("align", False)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        value = value.lower() == "true"
    if value is True:
        return "y"
    if value is False:
        return None
    if isinstance(value, str) and value.lower() in ALIGN_MODES:
        return value.lower()
    raise ValueError(f"option align must be true, false, x, y, z (the up axis) or full, got {value!r}")


def align_sample(x: np.ndarray, pairs: tuple[tuple[int, int], ...], mode: str) -> np.ndarray:
    """x turned as option ``align`` ``mode`` (from :func:`align_option`, not None) says."""
    return stand_upright(x, pairs) if mode == "full" else face_forward(x, pairs, AXES[mode])


def center_option(options: dict) -> bool:
    """Format option ``center`` (default true): translate each sample with :func:`center_on_joint`."""
    value = options["center"] if "center" in options else True
    if isinstance(value, str) and value.lower() in ("true", "false"):  # from the CLI's --option center=false
        value = value.lower() == "true"
    if not isinstance(value, bool):
        raise ValueError(f"option center must be true or false, got {value!r}")
    return value
