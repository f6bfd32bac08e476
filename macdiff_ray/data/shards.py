"""Parquet shard schema and writer, plus the temporary spool used while the padded length is not yet known.

A shard row is one sample; ``x`` is ``fixed_shape_tensor(float32, [M, T_max, V, C])`` zero-padded in persons
and frames (docs/ARCHITECTURE.md). Writer options are fixed and no timestamp is written, so the same samples
always give byte-identical files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from macdiff_ray.data.samples import RawSample

__all__ = ["shard_schema", "samples_to_table", "write_shard", "spool_write", "spool_read", "table_x"]

# Fixed writer options (part of the determinism contract). zstd level 3: about 3x smaller than raw float32 on
# zero-padded skeletons at a small CPU cost; 256-row row groups keep reads of one split fine-grained.
_COMPRESSION = "zstd"
_COMPRESSION_LEVEL = 3
_ROW_GROUP_SIZE = 256

_INT_COLUMNS = ("label", "subject", "view", "setup", "replication")


def shard_schema(max_persons: int, max_frames: int, num_joints: int, channels: int = 3) -> pa.Schema:
    """The exact shard columns of docs/ARCHITECTURE.md."""
    return pa.schema(
        [
            ("sample_id", pa.string()),
            ("x", pa.fixed_shape_tensor(pa.float32(), [max_persons, max_frames, num_joints, channels])),
            ("length", pa.int32()),
            ("num_persons", pa.int8()),
            ("label", pa.int32()),
            ("subject", pa.int32()),
            ("view", pa.int32()),
            ("setup", pa.int32()),
            ("replication", pa.int32()),
            ("split", pa.string()),
        ]
    )


def samples_to_table(samples: Sequence[RawSample], max_persons: int, max_frames: int, num_joints: int,
                     channels: int = 3) -> pa.Table:
    """Pad each ``x (M, T, V, C)`` to ``(max_persons, max_frames, V, C)`` with zeros and build the table."""
    n = len(samples)
    x = np.zeros((n, max_persons, max_frames, num_joints, channels), dtype=np.float32)  # (N, M, T_max, V, C)
    for i, s in enumerate(samples):
        m, t = s.x.shape[:2]
        x[i, :m, :t] = s.x  # (M_i, T_i, V, C)
    schema = shard_schema(max_persons, max_frames, num_joints, channels)
    cols = {
        "sample_id": pa.array([s.sample_id for s in samples], pa.string()),
        "x": pa.ExtensionArray.from_storage(
            schema.field("x").type, pa.FixedShapeTensorArray.from_numpy_ndarray(x).storage
        ),
        "length": pa.array([s.x.shape[1] for s in samples], pa.int32()),
        "num_persons": pa.array([s.x.shape[0] for s in samples], pa.int8()),
        **{c: pa.array([int(getattr(s, c)) for s in samples], pa.int32()) for c in _INT_COLUMNS},
        "split": pa.array([s.split for s in samples], pa.string()),
    }
    return pa.table(cols, schema=schema)


def write_shard(table: pa.Table, path: str | Path) -> None:
    pq.write_table(
        table,
        str(path),
        row_group_size=_ROW_GROUP_SIZE,
        compression=_COMPRESSION,
        compression_level=_COMPRESSION_LEVEL,
        use_dictionary=["sample_id", "split"],
        write_statistics=True,
        store_schema=True,
    )


def table_x(table: pa.Table) -> np.ndarray:
    """The ``x`` column of a shard table as float32 ``(N, M, T_max, V, C)``."""
    col = table.column("x").combine_chunks()
    return col.to_numpy_ndarray()


def spool_write(path: Path, samples: Sequence[RawSample]) -> None:
    """Save unpadded samples to one ``.npz`` (no pickle): persons/frames flattened and concatenated."""
    shapes = np.array([s.x.shape[:2] for s in samples], dtype=np.int64).reshape(-1, 2)  # (N, 2) = (M_i, T_i)
    v, c = samples[0].x.shape[2:]
    flat = np.concatenate([s.x.reshape(-1, v, c) for s in samples]).astype(np.float32)  # (sum M_i*T_i, V, C)
    np.savez(
        path,
        x=flat,
        shapes=shapes,
        sample_id=np.array([s.sample_id for s in samples], dtype=str),
        split=np.array([s.split for s in samples], dtype=str),
        **{c_: np.array([int(getattr(s, c_)) for s in samples], dtype=np.int64) for c_ in _INT_COLUMNS},
    )


def spool_read(path: Path) -> list[RawSample]:
    with np.load(path, allow_pickle=False) as z:
        flat, shapes = z["x"], z["shapes"]
        ints = {c: z[c] for c in _INT_COLUMNS}
        ids, splits = z["sample_id"], z["split"]
    out, start = [], 0
    for i, (m, t) in enumerate(shapes):
        stop = start + int(m) * int(t)
        x = flat[start:stop].reshape(int(m), int(t), *flat.shape[1:])  # (M_i, T_i, V, C)
        start = stop
        out.append(RawSample(str(ids[i]), x, split=str(splits[i]), **{c: int(ints[c][i]) for c in _INT_COLUMNS}))
    return out
