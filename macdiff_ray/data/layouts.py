"""Joint layouts: joint names, the kinematic tree, body-part groups and the centring joint.

``JointLayout.parents[v]`` is the parent of joint ``v`` (``-1`` for a root); ``bones`` are ``(v, parents[v])``
pairs for every non-root joint. ``parts`` always has the five keys of :data:`PART_NAMES` (used by the body-part
occlusion task, paper Sec. 4.4). ``center_joint`` is the joint subtracted to remove global translation.
All indices are 0-based. Layouts round-trip through ``manifest.json`` with :meth:`JointLayout.to_dict` /
:meth:`JointLayout.from_dict`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from macdiff_ray.config import ConfigError

__all__ = ["JointLayout", "PART_NAMES", "LAYOUTS", "get_layout", "generic_layout", "load_layout_json"]

PART_NAMES: tuple[str, ...] = ("trunk", "left_arm", "right_arm", "left_leg", "right_leg")


@dataclass(frozen=True)
class JointLayout:
    """A skeleton's joint order and kinematic tree (all indices 0-based)."""

    name: str
    joint_names: tuple[str, ...]
    parents: tuple[int, ...]
    parts: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    center_joint: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "joint_names", tuple(str(n) for n in self.joint_names))
        object.__setattr__(self, "parents", tuple(int(p) for p in self.parents))
        object.__setattr__(self, "parts", {k: tuple(int(i) for i in v) for k, v in dict(self.parts).items()})
        v = len(self.joint_names)
        if v < 1:
            raise ConfigError(f"layout {self.name!r}: needs at least one joint")
        if len(set(self.joint_names)) != v:
            raise ConfigError(f"layout {self.name!r}: joint names are not unique")
        if len(self.parents) != v:
            raise ConfigError(f"layout {self.name!r}: {len(self.parents)} parents for {v} joints")
        for j, p in enumerate(self.parents):
            if p < -1 or p >= v or p == j:
                raise ConfigError(f"layout {self.name!r}: parents[{j}] = {p} is not -1 or another joint in [0, {v})")
        for j in range(v):  # walking up from any joint must reach a root within V steps (no cycles)
            k, steps = j, 0
            while k != -1:
                k, steps = self.parents[k], steps + 1
                if steps > v:
                    raise ConfigError(f"layout {self.name!r}: the parents of joint {j} form a cycle")
        if set(self.parts) != set(PART_NAMES):
            raise ConfigError(f"layout {self.name!r}: parts keys {sorted(self.parts)} must be exactly {list(PART_NAMES)}")
        for k, idx in self.parts.items():
            bad = [i for i in idx if not 0 <= i < v]
            if bad:
                raise ConfigError(f"layout {self.name!r}: parts[{k!r}] has joint indices {bad} outside [0, {v})")
        if not 0 <= self.center_joint < v:
            raise ConfigError(f"layout {self.name!r}: center_joint {self.center_joint} outside [0, {v})")

    def __hash__(self) -> int:
        return hash((self.name, self.joint_names, self.parents, tuple(sorted(self.parts.items())), self.center_joint))

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    @property
    def bones(self) -> tuple[tuple[int, int], ...]:
        """``(child, parent)`` pairs, one per non-root joint, in joint order."""
        return tuple((v, p) for v, p in enumerate(self.parents) if p >= 0)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "joint_names": list(self.joint_names),
            "parents": list(self.parents),
            "parts": {k: list(self.parts[k]) for k in PART_NAMES},
            "center_joint": self.center_joint,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "JointLayout":
        if not isinstance(d, Mapping):
            raise ConfigError(f"layout: expected a mapping, got {type(d).__name__}")
        keys = {"name", "joint_names", "parents", "parts", "center_joint"}
        unknown, missing = sorted(set(d) - keys), sorted(keys - set(d))
        if unknown or missing:
            raise ConfigError(f"layout: unknown keys {unknown}, missing keys {missing}")
        if not isinstance(d["parts"], Mapping):
            raise ConfigError(f"layout.parts: expected a mapping, got {type(d['parts']).__name__}")
        return cls(
            name=str(d["name"]),
            joint_names=tuple(d["joint_names"]),
            parents=tuple(d["parents"]),
            parts={k: tuple(v) for k, v in d["parts"].items()},
            center_joint=int(d["center_joint"]),
        )


def _one_based(names: Sequence[str], parents_1: Sequence[int]) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Names plus 1-based parents (0 = root) as written in the dataset docs -> 0-based parents (-1 = root)."""
    return tuple(names), tuple(p - 1 for p in parents_1)


# NTU RGB+D (Kinect v2), 25 joints; order and tree from the NTU RGB+D paper (Shahroudy et al., CVPR 2016).
_NTU_NAMES, _NTU_PARENTS = _one_based(
    [
        "spine_base", "spine_mid", "neck", "head",
        "left_shoulder", "left_elbow", "left_wrist", "left_hand",
        "right_shoulder", "right_elbow", "right_wrist", "right_hand",
        "left_hip", "left_knee", "left_ankle", "left_foot",
        "right_hip", "right_knee", "right_ankle", "right_foot",
        "spine_shoulder", "left_hand_tip", "left_thumb", "right_hand_tip", "right_thumb",
    ],
    [0, 1, 21, 3, 21, 5, 6, 7, 21, 9, 10, 11, 1, 13, 14, 15, 1, 17, 18, 19, 2, 8, 8, 12, 12],
)
NTU25 = JointLayout(
    "ntu25",
    _NTU_NAMES,
    _NTU_PARENTS,
    {
        "trunk": (0, 1, 2, 3, 20),
        "left_arm": (4, 5, 6, 7, 21, 22),
        "right_arm": (8, 9, 10, 11, 23, 24),
        "left_leg": (12, 13, 14, 15),
        "right_leg": (16, 17, 18, 19),
    },
    center_joint=1,  # spine_mid: the origin used by the common NTU preprocessing (CTR-GCN / MAMP / MacDiff)
)

# Kinect SDK v1, 20 joints (NW-UCLA all_sqe, UTKinect); order from nw_ucla/PROVENANCE.md.
_K1_NAMES, _K1_PARENTS = _one_based(
    [
        "hip_center", "spine", "shoulder_center", "head",
        "left_shoulder", "left_elbow", "left_wrist", "left_hand",
        "right_shoulder", "right_elbow", "right_wrist", "right_hand",
        "left_hip", "left_knee", "left_ankle", "left_foot",
        "right_hip", "right_knee", "right_ankle", "right_foot",
    ],
    [0, 1, 2, 3, 3, 5, 6, 7, 3, 9, 10, 11, 1, 13, 14, 15, 1, 17, 18, 19],
)
KINECT_V1_20 = JointLayout(
    "kinect_v1_20",
    _K1_NAMES,
    _K1_PARENTS,
    {
        "trunk": (0, 1, 2, 3),
        "left_arm": (4, 5, 6, 7),
        "right_arm": (8, 9, 10, 11),
        "left_leg": (12, 13, 14, 15),
        "right_leg": (16, 17, 18, 19),
    },
    center_joint=1,  # spine: the Kinect v1 counterpart of NTU's spine_mid
)

# MSR Action3D, 20 joints; order from msr_action3d/PROVENANCE.md (not the Kinect SDK order).
_MSR_NAMES, _MSR_PARENTS = _one_based(
    [
        "left_shoulder", "right_shoulder", "neck", "spine", "left_hip", "right_hip", "hip_center",
        "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hand", "right_hand",
        "left_knee", "right_knee", "left_ankle", "right_ankle", "left_foot", "right_foot", "head",
    ],
    # parent (1-based) of joints 1..20
    [3, 3, 4, 7, 7, 7, 0, 1, 2, 8, 9, 10, 11, 5, 6, 14, 15, 16, 17, 3],
)
MSR20 = JointLayout(
    "msr20",
    _MSR_NAMES,
    _MSR_PARENTS,
    {
        "trunk": (2, 3, 6, 19),
        "left_arm": (0, 7, 9, 11),
        "right_arm": (1, 8, 10, 12),
        "left_leg": (4, 13, 15, 17),
        "right_leg": (5, 14, 16, 18),
    },
    center_joint=3,  # spine
)

LAYOUTS: dict[str, JointLayout] = {l.name: l for l in (NTU25, KINECT_V1_20, MSR20)}


def get_layout(name: str) -> JointLayout:
    """A named layout (``ntu25``, ``kinect_v1_20``, ``msr20``); ``generic<V>`` gives :func:`generic_layout`."""
    if name in LAYOUTS:
        return LAYOUTS[name]
    if name.startswith("generic") and name[len("generic"):].isdigit():
        return generic_layout(int(name[len("generic"):]))
    raise ConfigError(f"unknown joint layout {name!r}; known: {sorted(LAYOUTS)} or 'generic<V>'")


def generic_layout(num_joints: int, parents: Sequence[int] | None = None, name: str | None = None) -> JointLayout:
    """A layout for data of unknown skeleton (``arrays`` format): ``V`` joints named ``j0..``.

    Without ``parents`` every joint is a root (no bones) and all joints go to ``trunk`` (the other parts are
    empty), centred on joint 0.
    """
    if num_joints < 1:
        raise ConfigError(f"generic layout: num_joints must be >= 1, got {num_joints}")
    par = tuple(parents) if parents is not None else (-1,) * num_joints
    parts = {k: () for k in PART_NAMES}
    parts["trunk"] = tuple(range(num_joints))
    return JointLayout(name or f"generic{num_joints}", tuple(f"j{i}" for i in range(num_joints)), par, parts, 0)


# Keys of a layout JSON file (bring-your-own data, ``--option layout=FILE``): required, then optional.
_JSON_REQUIRED = ("joint_names", "parents", "root")
_JSON_OPTIONAL = ("name", "parts")


def load_layout_json(path: str | Path) -> JointLayout:
    """Read a joint layout from a small JSON file, strictly.

    ``{"joint_names": [str, ...], "parents": [int, ...], "root": int | str, "name": str, "parts": {...}}``:
    ``parents[v]`` is the 0-based parent of joint ``v`` (``-1`` for the tree's root); ``root`` (an index or a
    joint name) is the joint each sequence is centred on (e.g. the pelvis); ``name`` defaults to the file
    stem; ``parts`` (optional) maps some of :data:`PART_NAMES` to joint indices or names (missing parts are
    empty; without ``parts`` every joint is ``trunk``). An unknown key, a wrong type or a bad parent raises
    :class:`~macdiff_ray.data.samples.DataFormatError` naming the file and the field.
    """
    from macdiff_ray.data.samples import DataFormatError

    p = Path(path)
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise DataFormatError(p, "", f"cannot read the layout file ({e.strerror})") from e
    except json.JSONDecodeError as e:
        raise DataFormatError(p, f"line {e.lineno} column {e.colno}", f"malformed JSON: {e.msg}") from e
    except UnicodeDecodeError as e:
        raise DataFormatError(p, f"byte {e.start}", "not UTF-8 text") from e
    if not isinstance(d, dict):
        raise DataFormatError(p, "top level", f"expected a JSON object, got {type(d).__name__}")
    unknown = sorted(set(d) - set(_JSON_REQUIRED) - set(_JSON_OPTIONAL))
    if unknown:
        raise DataFormatError(p, f"field {unknown[0]}", f"unknown key; a layout file takes {list(_JSON_REQUIRED)} "
                                                         f"and optionally {list(_JSON_OPTIONAL)}")
    for k in _JSON_REQUIRED:
        if k not in d:
            raise DataFormatError(p, f"field {k}", "missing")
    names = d["joint_names"]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise DataFormatError(p, "field joint_names", f"expected a non-empty list of non-empty strings, "
                                                      f"got {names!r}")
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise DataFormatError(p, "field joint_names", f"joint name {dup!r} appears twice")
    v = len(names)
    parents = d["parents"]
    if not isinstance(parents, list) or len(parents) != v:
        raise DataFormatError(p, "field parents", f"expected a list of {v} integers (one per joint), got {parents!r}")

    def joint(value, field_name: str) -> int:
        if isinstance(value, str):
            if value not in names:
                raise DataFormatError(p, f"field {field_name}", f"unknown joint name {value!r}")
            return names.index(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < v:
            raise DataFormatError(p, f"field {field_name}", f"expected a joint index in [0, {v}) or a joint name, "
                                                            f"got {value!r}")
        return value

    for j, par in enumerate(parents):
        if isinstance(par, bool) or not isinstance(par, int) or par < -1 or par >= v or par == j:
            raise DataFormatError(p, f"field parents[{j}]", f"{par!r} is not -1 or the index of another joint "
                                                            f"in [0, {v})")
    root = joint(d["root"], "root")
    name = d["name"] if "name" in d else p.stem
    if not isinstance(name, str) or not name:
        raise DataFormatError(p, "field name", f"expected a non-empty string, got {name!r}")
    if name in LAYOUTS or name.startswith("generic"):
        raise DataFormatError(p, "field name", f"{name!r} is the name of a built-in layout; choose another")
    parts: dict[str, tuple[int, ...]] = {k: () for k in PART_NAMES}
    if "parts" in d:
        if not isinstance(d["parts"], dict):
            raise DataFormatError(p, "field parts", f"expected an object, got {type(d['parts']).__name__}")
        for k, idx in d["parts"].items():
            if k not in PART_NAMES:
                raise DataFormatError(p, f"field parts.{k}", f"unknown body part; known: {list(PART_NAMES)}")
            if not isinstance(idx, list):
                raise DataFormatError(p, f"field parts.{k}", f"expected a list of joints, got {idx!r}")
            parts[k] = tuple(joint(i, f"parts.{k}[{n}]") for n, i in enumerate(idx))
    else:
        parts["trunk"] = tuple(range(v))
    try:
        return JointLayout(name, tuple(names), tuple(parents), parts, center_joint=root)
    except ConfigError as e:  # a cycle in parents
        raise DataFormatError(p, "field parents", str(e)) from e
