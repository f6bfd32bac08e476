"""Transfer between prepared datasets: joint-layout checks and optional joint maps.

A pretrained encoder has one token per joint of its SOURCE layout. Evaluating it on a TARGET dataset with another
layout is refused (:class:`LayoutMismatchError`) unless a joint-map file says, for every source joint, which target
joint feeds it. Joint-map file (JSON or YAML)::

    {"source_layout": "ntu25", "target_layout": "kinect_v1_20", "map": [t_0, t_1, ..., t_{V_src - 1}]}

``map[v]`` is the target joint index used as source joint ``v`` (indices may repeat, e.g. to fill NTU's hand tips
from the wrists). The mapped input is ``x[..., map, :]``: ``(..., V_tgt, C) -> (..., V_src, C)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from macdiff_ray.config import ConfigError, load_file


class LayoutMismatchError(ValueError):
    """The checkpoint's joint layout differs from the dataset's and no joint map was given."""


@dataclass(frozen=True)
class JointMap:
    """``index[v]`` = target joint feeding source joint ``v``; length = source joint count."""

    source_layout: str
    target_layout: str
    index: tuple[int, ...]


def _layout_name(layout: Any) -> str:
    if isinstance(layout, str):
        return layout
    if isinstance(layout, Mapping):
        return str(layout.get("name"))
    return str(getattr(layout, "name", layout))


def _layout_joints(layout: Any) -> Optional[int]:
    if isinstance(layout, Mapping) and "joint_names" in layout:
        return len(layout["joint_names"])
    names = getattr(layout, "joint_names", None)
    return len(names) if names is not None else None


def load_joint_map(path: str | Path) -> JointMap:
    """Read and validate a joint-map file (see module docstring); errors name the file and field."""
    d = load_file(path)
    for key in ("source_layout", "target_layout", "map"):
        if key not in d:
            raise ConfigError(f"{path}: joint map lacks key {key!r}; needs source_layout, target_layout, map")
    unknown = sorted(set(d) - {"source_layout", "target_layout", "map"})
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown} in joint map")
    idx = d["map"]
    if not isinstance(idx, list) or not idx or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0
                                                        for i in idx):
        raise ConfigError(f"{path}: map must be a non-empty list of non-negative integers, got {idx!r}")
    return JointMap(str(d["source_layout"]), str(d["target_layout"]), tuple(idx))


def check_transfer(ckpt_layout: Any, data_layout: Any, joint_map: Optional[JointMap]) -> Optional[JointMap]:
    """Return the joint map to apply (None when the layouts agree); raise clearly when they cannot be bridged.

    ``ckpt_layout`` / ``data_layout``: layout dicts (``JointLayout.to_dict()``), objects or names.
    """
    src, tgt = _layout_name(ckpt_layout), _layout_name(data_layout)
    v_src, v_tgt = _layout_joints(ckpt_layout), _layout_joints(data_layout)
    same = src == tgt and (v_src is None or v_tgt is None or v_src == v_tgt)
    if same:
        if joint_map is not None and joint_map.source_layout != joint_map.target_layout:
            raise LayoutMismatchError(
                f"a joint map {joint_map.source_layout!r}->{joint_map.target_layout!r} was given, but the checkpoint "
                f"and the dataset share the layout {src!r}; drop --joint-map"
            )
        return None
    if joint_map is None:
        raise LayoutMismatchError(
            f"joint layout differs: the checkpoint was pretrained on {src!r} ({v_src} joints) but the dataset uses "
            f"{tgt!r} ({v_tgt} joints); a {v_src}-joint encoder cannot read {v_tgt}-joint skeletons. Pass "
            f"--joint-map FILE mapping each of the {v_src} source joints to a target joint (see "
            f"macdiff_ray/eval/transfer.py), or evaluate on a dataset with the {src!r} layout"
        )
    if joint_map.source_layout != src or joint_map.target_layout != tgt:
        raise LayoutMismatchError(
            f"joint map is for {joint_map.source_layout!r}->{joint_map.target_layout!r}, but this transfer is "
            f"{src!r}->{tgt!r}"
        )
    if v_src is not None and len(joint_map.index) != v_src:
        raise LayoutMismatchError(f"joint map has {len(joint_map.index)} entries; the source layout {src!r} has "
                                  f"{v_src} joints")
    if v_tgt is not None and max(joint_map.index) >= v_tgt:
        raise LayoutMismatchError(f"joint map index {max(joint_map.index)} is out of range for the target layout "
                                  f"{tgt!r} ({v_tgt} joints)")
    return joint_map


def check_alignment(ckpt_data: Mapping | None, info: Mapping, data_dir: Any = None) -> None:
    """Refuse a checkpoint whose pretraining data was turned to face +x (prepare's option ``align``) when this
    data was not, or the other way round: its features would be read in another frame. A manifest from before the
    option counts as unturned (``describe_*`` give None); a checkpoint written before it has no ``align`` entry and is
    not checked."""
    if "align" not in (ckpt_data or {}):
        return
    have, want = ckpt_data["align"], info.get("align")
    if have != want:
        where = f"{data_dir}: " if data_dir else ""
        def says(a):
            if a is None:
                return "not turned (no --option align)"
            return "stood upright (--option align=full)" if a == "full" else f"turned about {a} (--option align={a})"
        raise LayoutMismatchError(f"{where}the checkpoint's pretraining data was {says(have)}, this dataset was "
                                  f"{says(want)}; prepare the data as the checkpoint's was")


def apply_joint_map(x: torch.Tensor, joint_map: Optional[JointMap]) -> torch.Tensor:
    """``(..., V_tgt, C) -> (..., V_src, C)`` (identity without a map)."""
    if joint_map is None:
        return x
    idx = torch.as_tensor(joint_map.index, dtype=torch.long, device=x.device)  # (V_src,)
    return x.index_select(-2, idx)  # (..., V_src, C)
