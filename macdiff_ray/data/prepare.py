"""Convert a raw source into a prepared dataset: Parquet shards + ``manifest.json`` (docs/ARCHITECTURE.md).

Two passes, bounded memory: (1) read every input file in sorted order, validate each sample, accumulate split
counts and per-sample moments, and spool the unpadded samples in chunks of ``shard_rows``; (2) once the longest
sequence ``T_max`` is known, pad each chunk to ``(M, T_max, V, C)`` and write it as one shard.

Guarantees:
- atomic: everything is written into ``<output_dir>.tmp-<pid>`` and renamed at the end; on any error the
  temporary folder is removed and ``output_dir`` is untouched;
- deterministic: inputs sorted, samples of a file sorted by ``sample_id``, fixed writer options, no timestamps;
  converting twice gives byte-identical shards and manifest;
- NaN never reaches a shard: every sample passes :func:`validate_sample`; with ``on_error="skip"`` a bad file or
  sample is recorded in ``manifest["skipped"]`` with its reason, with ``"raise"`` the first one stops the run.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from macdiff_ray import __version__
from macdiff_ray.data.benchmarks import SPLITS, benchmarks_for_dataset, split_of
from macdiff_ray.data.formats import FormatSpec, get_format
from macdiff_ray.data.lengths import length_stats
from macdiff_ray.data.manifest import MANIFEST_NAME, SCHEMA_VERSION, sha256_file
from macdiff_ray.data.report import build_report, sample_geometry
from macdiff_ray.data.samples import (DataFormatError, RawSample, align_option, align_sample, facing_joints,
                                     validate_sample)
from macdiff_ray.data.shards import samples_to_table, spool_read, spool_write, write_shard

__all__ = ["prepare_dataset", "UNITS"]

UNITS = {"m": 1.0, "cm": 0.01, "mm": 0.001}
# Options every format takes (prepare applies them after reading): align (samples.align_sample).
GENERIC_OPTIONS = frozenset({"align"})
_STD_FLOOR = 1e-6  # a coordinate constant over the training split would otherwise divide by zero downstream


class _Progress:
    """A progress bar on stderr (tqdm): ``prepare ucla: 34%|###   | 500/1484 [00:04<00:08, 123.4 file/s]``."""

    def __init__(self, label: str, total: int, enabled: bool):
        self.bar = None
        if enabled:  # tqdm only when drawn: a bare GPU box (benchmarks/gpu.py) may have torch and pyarrow only
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=f"prepare {label}", unit="file", dynamic_ncols=True, mininterval=0.5)

    def update(self, done: int) -> None:
        if self.bar is not None:
            self.bar.update(done - self.bar.n)

    def close(self, note: str = "") -> None:
        if self.bar is None:
            return
        if note:
            self.bar.set_postfix_str(note.strip(" ()"), refresh=True)
        self.bar.close()


def _moments(x: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """Count, mean ``(C,)`` and sum of squared deviations ``(C,)`` (float64) over the joints of every tracked
    (person, frame) of ``x (M, T, V, C)``; an all-zero (person, frame) is an untracked body and is left out."""
    c = x.shape[-1]
    tracked = np.any(x != 0, axis=(2, 3))  # (M, T)
    pts = x[tracked].reshape(-1, c).astype(np.float64)  # (P, C)
    if pts.shape[0] == 0:
        return 0, np.zeros(c), np.zeros(c)
    mean = pts.mean(axis=0)  # (C,)
    return pts.shape[0], mean, ((pts - mean) ** 2).sum(axis=0)


def _combine(counts: np.ndarray, means: np.ndarray, m2s: np.ndarray) -> dict | None:
    """Chan et al.'s parallel combination of per-sample moments -> ``{"mean": [C], "std": [C]}``."""
    n = counts.sum()
    if n == 0:
        return None
    mean = (counts[:, None] * means).sum(axis=0) / n  # (C,)
    m2 = m2s.sum(axis=0) + (counts[:, None] * (means - mean) ** 2).sum(axis=0)  # (C,)
    std = np.maximum(np.sqrt(m2 / n), _STD_FLOOR)
    return {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}


def _resolve_options(spec: FormatSpec, fmt: str, units: str, synthetic_options: dict | None,
                     format_options: dict) -> dict:
    options: dict[str, Any] = {}
    if synthetic_options is not None:
        if fmt != "synthetic":
            raise ValueError(f"synthetic_options given for format {fmt!r}; they apply to 'synthetic' only")
        options.update(synthetic_options)
    options.update({k: v for k, v in format_options.items() if v is not None})
    if units not in UNITS:
        raise ValueError(f"units must be one of {sorted(UNITS)}, got {units!r}")
    if "units" in spec.option_names:
        options["units"] = units
    elif units != "m":
        raise ValueError(f"format {fmt!r} is read in metres and takes no units option (got units={units!r})")
    align_option(options)  # checked before any file is read
    unknown = sorted(set(options) - set(spec.option_names) - GENERIC_OPTIONS)
    if unknown:
        raise ValueError(f"format {fmt!r}: unknown option(s) {unknown}; it accepts "
                         f"{sorted(spec.option_names | GENERIC_OPTIONS)}")
    return options


def _relative(path: Path | str, root: Path | None) -> str:
    p = Path(path)
    if root is not None:
        try:
            return str(p.resolve().relative_to(root.resolve()))
        except ValueError:
            pass
    return str(p)


def prepare_dataset(
    fmt: str,
    input_path: str | Path | None,
    output_dir: str | Path,
    *,
    on_error: str = "raise",
    progress: bool = True,
    units: str = "m",
    shard_rows: int = 1024,
    synthetic_options: dict | None = None,
    overwrite: bool = False,
    **format_options: Any,
) -> dict:
    """Convert ``input_path`` (format ``fmt``) into a prepared dataset at ``output_dir``; returns the manifest.

    Args:
        fmt: a name in :data:`macdiff_ray.data.formats.FORMATS` (``ucla``, ``msr``, ``ntu``, ``arrays``, ...).
        input_path: source file or folder (``None`` for ``synthetic``).
        output_dir: destination; must not hold a prepared dataset unless ``overwrite``.
        on_error: ``"raise"`` stops at the first bad file/sample; ``"skip"`` records it in ``skipped``.
        progress: print a one-line progress report on stderr.
        units: unit of the source coordinates for formats that take it (``m``/``cm``/``mm``).
        shard_rows: rows per Parquet shard.
        synthetic_options: ``{"num_samples", "num_classes", "seed"}`` for ``fmt="synthetic"``.
        overwrite: replace an existing prepared dataset.
        **format_options: format-specific options (e.g. ``missing_list`` for ``ntu``); unknown keys raise.

    ``output_dir`` may be a URI (``s3://bucket/prepared/ucla``): the dataset is written to a local temp folder,
    then uploaded with ``manifest.json`` last (:func:`macdiff_ray.storage.publish_dir`), so a reader never takes
    a half-uploaded folder for a prepared dataset; ``overwrite`` first deletes the old manifest, then the rest.
    """
    from macdiff_ray.storage import is_uri

    if is_uri(output_dir):
        return _prepare_to_uri(fmt, input_path, str(output_dir), overwrite=overwrite, on_error=on_error,
                               progress=progress, units=units, shard_rows=shard_rows,
                               synthetic_options=synthetic_options, **format_options)
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if isinstance(shard_rows, bool) or not isinstance(shard_rows, int) or shard_rows < 1:
        raise ValueError(f"shard_rows must be a positive integer, got {shard_rows!r}")
    spec = get_format(fmt)
    options = _resolve_options(spec, fmt, units, synthetic_options, format_options)
    src = Path(input_path) if input_path is not None else None
    if src is None and fmt != "synthetic":
        raise ValueError(f"format {fmt!r} needs an input path")

    out = Path(output_dir)
    if out.exists():
        if not out.is_dir():
            raise FileExistsError(f"{out}: exists and is not a folder")
        complete = (out / MANIFEST_NAME).is_file()
        if complete and not overwrite:
            raise FileExistsError(f"{out}: a prepared dataset already exists; pass overwrite=True (--overwrite)")
        if not complete and any(out.iterdir()) and not overwrite:
            raise FileExistsError(f"{out}: folder is not empty and not a prepared dataset; refusing to write into it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f"{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "shards").mkdir(parents=True)
    try:
        manifest = _convert(spec, fmt, src, tmp, options, on_error, progress, shard_rows)
        if out.exists():
            old = out.parent / f"{out.name}.old-{os.getpid()}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return manifest


def _prepare_to_uri(fmt: str, input_path: str | Path | None, uri: str, *, overwrite: bool, **kwargs: Any) -> dict:
    """:func:`prepare_dataset` into a URI: convert locally, then publish with the manifest last."""
    import tempfile

    from macdiff_ray import storage

    existing = storage.list_files(uri)
    if existing and not overwrite:
        what = "a prepared dataset" if MANIFEST_NAME in existing else f"{len(existing)} object(s), not a dataset"
        raise FileExistsError(f"{uri}: holds {what}; pass overwrite=True (--overwrite) to replace it")
    with tempfile.TemporaryDirectory(prefix="macdiff_prepare_") as tmp:
        local = Path(tmp) / "dataset"
        manifest = prepare_dataset(fmt, input_path, local, overwrite=False, **kwargs)
        if existing:  # the manifest goes first, so readers stop taking the folder for a dataset at once
            manifest_uri = storage.join(uri, MANIFEST_NAME)
            if storage.is_file(manifest_uri):
                fs, p = storage.resolve(manifest_uri)
                fs.delete_file(p)
            storage.delete_dir(uri)
        storage.publish_dir(local, uri, last=[MANIFEST_NAME])
    return manifest


def _convert(spec: FormatSpec, fmt: str, src: Path | None, tmp: Path, options: dict, on_error: str,
             progress: bool, shard_rows: int) -> dict:
    spool_dir = tmp / "_spool"
    spool_dir.mkdir()
    align = align_option(options)
    inputs, skipped_in = spec.list_inputs(src, options)
    skipped: list[dict] = [{"input": _relative(s["input"], src), "reason": str(s["reason"])} for s in skipped_in]
    bar = _Progress(fmt, len(inputs), progress)

    layout = None
    meta: list[RawSample] = []  # every kept sample with x replaced by an empty (0, 0, V, C) array
    moments: list[tuple[int, np.ndarray, np.ndarray]] = []
    lengths: list[int] = []  # valid frames per kept sample (manifest "lengths")
    geometry: list[tuple[float, float, float]] = []  # per-sample centre distance, size, bone (the report)
    seen: set[str] = set()
    buffer: list[RawSample] = []
    chunks: list[Path] = []
    max_frames, max_persons = 0, max(1, spec.max_persons)

    def fail(where: str, err: DataFormatError) -> None:
        if on_error == "raise":
            raise err
        skipped.append({"input": where, "reason": str(err)})

    def flush(final: bool) -> None:
        while len(buffer) >= shard_rows or (final and buffer):
            part, buffer[:] = buffer[:shard_rows], buffer[shard_rows:]
            p = spool_dir / f"chunk-{len(chunks):05d}.npz"
            spool_write(p, part)
            chunks.append(p)

    for i, path in enumerate(inputs):
        rel = _relative(path, src)
        try:
            samples = spec.read(path, options)
        except DataFormatError as e:
            fail(rel, e)
            bar.update(i + 1)
            continue
        if layout is None and samples:
            layout = spec.layout_for(options, samples)
            facing = facing_joints(layout, align) if align is not None else None
        for s in sorted(samples, key=lambda s: s.sample_id):
            try:
                validate_sample(s, num_joints=layout.num_joints, num_classes=spec.num_classes, source=str(path))
                if s.sample_id in seen:
                    raise DataFormatError(path, f"sample {s.sample_id!r}", "duplicate sample id")
            except DataFormatError as e:
                fail(f"{rel}#{s.sample_id}", e)
                continue
            x = np.ascontiguousarray(s.x, dtype=np.float32)  # (M, T, V, C)
            if align is not None:
                x = align_sample(x, facing, align)
            seen.add(s.sample_id)
            buffer.append(RawSample(s.sample_id, x, int(s.label), int(s.subject), int(s.view), int(s.setup),
                                    int(s.replication), s.split))
            meta.append(RawSample(s.sample_id, np.zeros((0, 0) + x.shape[2:], np.float32), int(s.label),
                                  int(s.subject), int(s.view), int(s.setup), int(s.replication), s.split))
            moments.append(_moments(x))
            lengths.append(int(x.shape[1]))
            geometry.append(sample_geometry(x, layout.bones, layout.center_joint if layout.bones else None))
            max_frames = max(max_frames, x.shape[1])
            max_persons = max(max_persons, x.shape[0])
        flush(final=False)
        bar.update(i + 1)
    flush(final=True)
    bar.close(f" ({len(meta)} samples, {len(skipped)} skipped)")
    if not meta:
        raise DataFormatError(src if src is not None else fmt, "", f"no valid samples ({len(skipped)} skipped)")

    dataset = spec.dataset(options, meta)
    num_classes = spec.num_classes_for(dataset)
    if num_classes is None:
        num_classes = max(s.label for s in meta) + 1
    bad = [s.sample_id for s in meta if s.label >= num_classes]
    if bad:
        raise DataFormatError(src, f"sample {bad[0]!r}", f"label out of range for {dataset} ({num_classes} classes)")

    # Split counts and train-split statistics for every benchmark the dataset serves.
    counts = np.array([m[0] for m in moments], dtype=np.float64)  # (N,)
    means = np.stack([m[1] for m in moments])  # (N, C)
    m2s = np.stack([m[2] for m in moments])  # (N, C)
    rows = [{"label": s.label, "subject": s.subject, "view": s.view, "setup": s.setup,
             "replication": s.replication, "split": s.split} for s in meta]
    split_counts, stats = {}, {}
    length_splits = {}
    for b in benchmarks_for_dataset(dataset):
        which = [split_of(b, r) for r in rows]
        split_counts[b] = {"train": which.count("train"), "test": which.count("test")}
        length_splits[b] = {sp: length_stats([n for n, w in zip(lengths, which) if w == sp]) for sp in SPLITS}
        train = np.array([w == "train" for w in which])
        st = _combine(counts[train], means[train], m2s[train]) if train.any() else None
        if st is not None:
            stats[b] = st

    # Second pass: pad each spooled chunk to (M, T_max, V, C) and write it as a shard.
    shards = []
    for k, chunk in enumerate(chunks):
        part = spool_read(chunk)
        table = samples_to_table(part, max_persons, max_frames, layout.num_joints, 3)
        rel_path = f"shards/part-{k:05d}.parquet"
        write_shard(table, tmp / rel_path)
        shards.append({"path": rel_path, "rows": table.num_rows, "sha256": sha256_file(tmp / rel_path)})
        chunk.unlink()
    spool_dir.rmdir()

    manifest = {
        "schema_version": SCHEMA_VERSION,
        "source_format": fmt,
        "dataset": dataset,
        "layout": layout.to_dict(),
        "num_classes": int(num_classes),
        "class_names": spec.class_names_for(dataset),
        "max_persons": int(max_persons),
        "max_frames": int(max_frames),
        "num_joints": layout.num_joints,
        "channels": 3,
        "units": "m",
        "align": align,  # option align: None, the up axis each sample was turned about, or "full"
        "num_samples": len(meta),
        "split_counts": split_counts,
        "stats": stats,
        "lengths": {"all": length_stats(lengths), "splits": length_splits},  # macdiff_ray/data/lengths.py
        "fps": spec.fps,
        "report": build_report(*zip(*geometry)),  # macdiff_ray/data/report.py
        "shards": shards,
        "skipped": skipped,
        "created_by": f"macdiff_ray {__version__}",
    }
    (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest
