"""MSR Action3D skeleton text (``aAA_sSS_eEE_skeleton3D.txt``; see shared/data/msr_action3d/PROVENANCE.md).

Four numbers per line, ``x y z confidence``, 20 lines per frame, no header; metres. The confidence is dropped
(0 occurs on valid joints). Frames whose 20 joints are all zero are lost tracking and are removed (PROVENANCE:
they corrupt centring); a file with no tracked frame is an error.

Option ``subset``: ``"clean"`` (default) keeps the 557 sequences of ``files_used_in_cvpr12_paper.txt`` (found
in the input folder or its parent) and records the other 10 as skipped; ``"all"`` reads all 567.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from macdiff_ray.data.formats import FormatSpec, files_matching
from macdiff_ray.data.layouts import MSR20
from macdiff_ray.data.samples import DataFormatError, RawSample, center_on_joint, center_option

NAME_RE = re.compile(r"^a(\d{2})_s(\d{2})_e(\d{2})_skeleton3D$")
CLEAN_LIST = "files_used_in_cvpr12_paper.txt"
CLASS_NAMES = ("high arm wave", "horizontal arm wave", "hammer", "hand catch", "forward punch", "high throw",
               "draw x", "draw tick", "draw circle", "hand clap", "two hand wave", "side-boxing", "bend",
               "forward kick", "side kick", "jogging", "tennis swing", "tennis serve", "golf swing",
               "pick up & throw")
NUM_JOINTS = 20


def _subset(options: dict) -> str:
    subset = options["subset"] if "subset" in options else "clean"
    if subset not in ("clean", "all"):
        raise ValueError(f"msr option subset must be 'clean' or 'all', got {subset!r}")
    return subset


def list_inputs(input_path: Path, options: dict) -> tuple[list[Path], list[dict]]:
    root = Path(input_path)
    folder = root / "skeletons" if (root / "skeletons").is_dir() else root
    files = files_matching(folder, "*_skeleton3D.txt", "MSR Action3D *_skeleton3D.txt files")
    if _subset(options) == "all":
        return files, []
    candidates = [folder / CLEAN_LIST, folder.parent / CLEAN_LIST]
    lst = next((c for c in candidates if c.is_file()), None)
    if lst is None:
        raise DataFormatError(folder, "", f"subset 'clean' needs {CLEAN_LIST} in this folder or its parent "
                                          "(or pass subset='all')")
    clean = set(lst.read_text().split())
    inputs, skipped = [], []
    for f in files:
        sid = f.stem[: -len("_skeleton3D")]
        if sid in clean:
            inputs.append(f)
        else:
            skipped.append({"input": str(f), "reason": f"not in {CLEAN_LIST} (one of the 10 dropped sequences)"})
    return inputs, skipped


def read(path: Path, options: dict) -> list[RawSample]:
    m = NAME_RE.match(path.stem)
    if not m:
        raise DataFormatError(path, "file name", "expected aAA_sSS_eEE_skeleton3D.txt")
    action, subject, rep = (int(g) for g in m.groups())
    rows = []
    try:
        text = path.read_text(encoding="ascii")
    except UnicodeDecodeError as e:
        raise DataFormatError(path, f"byte {e.start}", "not ASCII text") from e
    for n, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 4:
            raise DataFormatError(path, f"line {n}", f"expected 4 numbers 'x y z c', got {len(parts)}: {line!r}")
        try:
            rows.append([float(p) for p in parts[:3]])
        except ValueError as e:
            raise DataFormatError(path, f"line {n}", f"not a number: {line!r}") from e
    if len(rows) % NUM_JOINTS:
        raise DataFormatError(path, f"line {len(rows)}", f"{len(rows)} joint lines is not a multiple of {NUM_JOINTS}")
    x = np.asarray(rows, dtype=np.float32).reshape(-1, NUM_JOINTS, 3)  # (T, V, C)
    tracked = np.any(x != 0, axis=(1, 2))  # (T,)
    if x.shape[0] and not tracked.any():
        raise DataFormatError(path, "", f"all {x.shape[0]} frames are zero (no tracked frame)")
    x = x[tracked]  # (T_tracked, V, C)
    x = x[None]  # (1, T, V, C)
    if center_option(options):
        x = center_on_joint(x, MSR20.center_joint)
    return [RawSample(path.stem[: -len("_skeleton3D")], x, action - 1, subject=subject, replication=rep)]


MSR_FORMAT = FormatSpec(
    name="msr",
    list_inputs=list_inputs,
    read=read,
    dataset=lambda options, samples: "msr",
    layout=MSR20,
    num_classes=20,
    max_persons=1,
    option_names=frozenset({"subset", "center"}),
    class_names=CLASS_NAMES,
    fps=15.0,  # msr_action3d/PROVENANCE.md (depth camera)
)
