"""Run logging: tensorboardX scalars from rank 0, one progress line per epoch, run files (config/results JSON).

Run files may live on a URI (``s3://...``): they are written through pyarrow's filesystem layer.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional

log = logging.getLogger("macdiff_ray.train")


# --------------------------------------------------------------------------------------------------------------
# Run files on a local path or a URI
# --------------------------------------------------------------------------------------------------------------
def join(base: str, *parts: str) -> str:
    """Join a local path or URI with relative parts."""
    if "://" in base:
        return "/".join([base.rstrip("/"), *parts])
    return str(Path(base, *parts))


def write_text(path: str, text: str) -> None:
    """Write a small text file atomically (local) or via pyarrow (URI)."""
    if "://" in path:
        import pyarrow.fs as pafs

        fs, p = pafs.FileSystem.from_uri(path)
        fs.create_dir(p.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(p) as f:
            f.write(text.encode())
        return
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, dest)


def read_text(path: str) -> Optional[str]:
    """Text of a file at a local path or URI, or None if it does not exist."""
    if "://" in path:
        import pyarrow.fs as pafs

        fs, p = pafs.FileSystem.from_uri(path)
        if fs.get_file_info(p).type != pafs.FileType.File:
            return None
        with fs.open_input_stream(p) as f:
            return f.read().decode()
    p = Path(path)
    return p.read_text() if p.is_file() else None


def write_json(path: str, data: Mapping[str, Any]) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str) -> Optional[dict]:
    text = read_text(path)
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from e


# --------------------------------------------------------------------------------------------------------------
# TensorBoard (rank 0 only)
# --------------------------------------------------------------------------------------------------------------
class RankZeroWriter:
    """tensorboardX SummaryWriter on rank 0; a no-op elsewhere.

    For a URI output the events go to a local temp dir and are copied to ``<output>/tb`` on :meth:`flush_to_output`.
    """

    def __init__(self, output: str, rank: int, purge_step: Optional[int] = None):
        self.enabled = rank == 0
        self._writer = None
        self._output_tb = join(output, "tb")
        if not self.enabled:
            return
        from tensorboardX import SummaryWriter

        self._local = tempfile.mkdtemp(prefix="macdiff_tb_") if "://" in output else self._output_tb
        # purge_step drops events a crashed attempt logged past the resumed step, so curves do not fold back.
        self._writer = SummaryWriter(logdir=self._local, purge_step=purge_step)

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        if self._writer is None:
            return
        for k, v in values.items():
            self._writer.add_scalar(k, float(v), step)

    def flush_to_output(self) -> None:
        if self._writer is None:
            return
        self._writer.flush()
        if "://" in self._output_tb:
            import pyarrow.fs as pafs

            fs, p = pafs.FileSystem.from_uri(self._output_tb)
            pafs.copy_files(self._local, p, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)

    def close(self) -> None:
        if self._writer is not None:
            self.flush_to_output()
            self._writer.close()
            self._writer = None


def progress_line(epoch: int, epochs: int, m: Mapping[str, float]) -> str:
    """One readable line per epoch."""
    val = f" val_loss {m['val_loss']:.4f}" if "val_loss" in m else ""
    return (
        f"epoch {epoch + 1}/{epochs} | loss {m['loss']:.4f} (mse {m['mse']:.4f}, unif {m['uniformity']:.4f})"
        f"{val} | lr {m['lr']:.2e} | grad_norm {m['grad_norm']:.3f} | {m['samples_per_s']:.1f} samples/s | "
        f"{m['epoch_time_s']:.1f} s | step {int(m['step'])}"
    )
