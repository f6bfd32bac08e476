"""NW-UCLA ``all_sqe`` JSON (one file per sequence; see shared/data/nw_ucla/PROVENANCE.md).

``{"file_name": "a01_s01_e00_v01", "skeletons": [T x 20 x [x, y, z]], "label": 1}``: metres, one body,
Kinect v1 joint order, 1-based label. Subject, repetition and view come from the file name
``aAA_sSS_eEE_vVV``. Sequences of a single frame (T = 1) are kept.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from macdiff_ray.data.formats import FormatSpec, files_matching
from macdiff_ray.data.layouts import KINECT_V1_20
from macdiff_ray.data.samples import DataFormatError, RawSample, center_on_joint, center_option

NAME_RE = re.compile(r"^a(\d{2})_s(\d{2})_e(\d{2})_v(\d{2})$")
# action id in the file name -> 1-based label (ids 07 and 10 do not exist)
ACTION_TO_LABEL = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 8: 7, 9: 8, 11: 9, 12: 10}
CLASS_NAMES = ("pick up with one hand", "pick up with two hands", "drop trash", "walk around", "sit down",
               "stand up", "donning", "doffing", "throw", "carry")


def list_inputs(input_path: Path, options: dict) -> tuple[list[Path], list[dict]]:
    files = files_matching(input_path, "*.json", "NW-UCLA all_sqe .json files")
    inputs, skipped = [], []
    for f in files:
        (inputs if NAME_RE.match(f.stem) else skipped).append(f)
    return inputs, [{"input": str(f), "reason": "file name is not aAA_sSS_eEE_vVV.json"} for f in skipped]


def read(path: Path, options: dict) -> list[RawSample]:
    m = NAME_RE.match(path.stem)
    if not m:
        raise DataFormatError(path, "file name", "expected aAA_sSS_eEE_vVV.json")
    action, subject, rep, view = (int(g) for g in m.groups())
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataFormatError(path, f"line {e.lineno} column {e.colno}", f"malformed JSON: {e.msg}") from e
    except UnicodeDecodeError as e:
        raise DataFormatError(path, f"byte {e.start}", "not UTF-8 text") from e
    if not isinstance(obj, dict):
        raise DataFormatError(path, "top level", f"expected a JSON object, got {type(obj).__name__}")
    for key in ("skeletons", "label"):
        if key not in obj:
            raise DataFormatError(path, f"field {key}", "missing")
    if "file_name" in obj and obj["file_name"] != path.stem:
        raise DataFormatError(path, "field file_name", f"{obj['file_name']!r} does not match the file name")
    label = obj["label"]
    if isinstance(label, bool) or not isinstance(label, int):
        raise DataFormatError(path, "field label", f"expected an integer, got {label!r}")
    if 1 <= label <= len(CLASS_NAMES) and ACTION_TO_LABEL.get(action) != label:
        raise DataFormatError(path, "field label", f"label {label} disagrees with action id a{action:02d}")
    sk = obj["skeletons"]
    if not isinstance(sk, list):
        raise DataFormatError(path, "field skeletons", f"expected a list of frames, got {type(sk).__name__}")
    try:
        x = np.asarray(sk, dtype=np.float32)  # (T, V, C)
    except (ValueError, TypeError) as e:
        raise DataFormatError(path, "field skeletons", f"not a T x joints x 3 array of numbers ({e})") from e
    if x.size == 0:
        x = np.zeros((0, KINECT_V1_20.num_joints, 3), np.float32)  # empty: validate_sample reports T = 0
    if x.ndim != 3:
        raise DataFormatError(path, "field skeletons", f"expected T x joints x 3, got shape {x.shape}")
    x = x[None]  # (1, T, V, C)
    if center_option(options) and x.shape[1]:
        x = center_on_joint(x, KINECT_V1_20.center_joint)
    return [RawSample(path.stem, x, label - 1, subject=subject, view=view, replication=rep)]


UCLA_FORMAT = FormatSpec(
    name="ucla",
    list_inputs=list_inputs,
    read=read,
    dataset=lambda options, samples: "ucla",
    layout=KINECT_V1_20,
    num_classes=10,
    max_persons=1,
    option_names=frozenset({"center"}),
    class_names=CLASS_NAMES,
)
