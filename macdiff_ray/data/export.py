"""Prepared Parquet shards -> one ``.npz`` in the ``arrays`` format (:mod:`macdiff_ray.data.formats.arrays`).

For moving a prepared dataset to another tool, and for the bring-your-own-data check of issue 14: prepare a
public dataset with ``--option center=false`` (camera coordinates), export it, and import it again through
``--format arrays`` as a user with their own Kinect recordings would.

    python -m macdiff_ray.data.export prepared/utk_cam utk-xsub /tmp/utk_cam.npz

The ``split`` field holds the benchmark's train/test assignment, so the ``custom`` benchmark of the re-imported
set reproduces it. Rows keep shard order; ``x`` is float32 ``(N, M, T_max, V, C)`` zero-padded, ``lengths`` the
valid frames. Local paths only for the output (``np.savez`` writes a file).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from macdiff_ray.data.pipeline import read_rows, select_split


def export_arrays(data_dir: str, benchmark: str, out: str | Path) -> dict:
    """Write ``out`` (``.npz``) with ``x, y, lengths, subject, view, split, sample_id``; returns the row counts."""
    parts, counts = [], {}
    for split in ("train", "test"):
        sel = select_split(data_dir, benchmark, split)
        counts[split] = len(sel)
        if len(sel):
            rows = read_rows(sel.shards, sel.sample_ids)
            rows["split"] = np.full(len(rows["label"]), split)
            parts.append(rows)
    if not parts:
        raise ValueError(f"{data_dir}: benchmark {benchmark!r} selects no rows")
    t_max = max(p["x"].shape[2] for p in parts)
    xs = [np.pad(p["x"], ((0, 0), (0, 0), (0, t_max - p["x"].shape[2]), (0, 0), (0, 0))) for p in parts]
    cat = {k: np.concatenate([p[k] for p in parts]) for k in ("label", "length", "subject", "view", "split",
                                                              "sample_id")}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, x=np.concatenate(xs).astype(np.float32), y=cat["label"].astype(np.int64),
             lengths=cat["length"].astype(np.int64), subject=cat["subject"].astype(np.int64),
             view=cat["view"].astype(np.int64), split=cat["split"].astype(str),
             sample_id=cat["sample_id"].astype(str))
    return counts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Export a prepared dataset's benchmark splits to one arrays .npz.")
    ap.add_argument("data", help="prepared dataset folder (manifest.json + shards)")
    ap.add_argument("benchmark", help="benchmark whose train/test split goes into the split field, e.g. utk-xsub")
    ap.add_argument("out", help="output .npz path")
    a = ap.parse_args(argv)
    counts = export_arrays(a.data, a.benchmark, a.out)
    print(f"wrote {a.out}: {counts['train']} train + {counts['test']} test rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
