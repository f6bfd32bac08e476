"""Ray Data streaming pipeline over a prepared dataset (docs/ARCHITECTURE.md "Batches from Ray Data").

``make_dataset`` builds ``read_parquet -> row filter (pushed into the Parquet scan) -> map_batches(transform)``;
``iter_torch`` turns a dataset or a Ray Train shard into dicts of torch tensors, with a local shuffle buffer.

Split and subset selection
    The driver reads only the cheap ``sample_id`` and ``label`` columns with pyarrow, filtered by
    ``split_filter(benchmark, split)`` (Parquet pushdown), draws the semi-supervised subset with
    ``stratified_subset`` on those labels, and hands Ray the resulting id set as one filter,
    ``col("sample_id").is_in(ids)``. Ray 2.60's ``read_parquet`` no longer accepts a pyarrow ``filter=``; it takes
    Ray expressions (``Dataset.filter(expr=...)``), which the optimizer pushes into the Parquet scan (the plan
    has no separate Filter operator), so rows outside the split never reach a block; row groups whose
    ``sample_id`` statistics exclude every id are skipped. Shards that hold no selected row are not read.
    Because the ids are fixed on the driver, every worker and every epoch sees exactly the same rows.

Shuffling (training)
    Shard order is randomised per pass (``FileShuffleConfig(seed, reseed_after_execution=True)``, streaming, no
    barrier); with ``materialize=True`` the materialised blocks are re-split into small blocks and their order is
    randomised per pass (``randomize_block_order``). Rows are then mixed by the local shuffle buffer of
    :func:`iter_torch` (pass ``seed + epoch`` there for a different, reproducible order per epoch).

CPU reservation (RAY-NOTES hang 1: if trainer workers hold every CPU, read/transform tasks are never scheduled
and the job hangs without an error). Callers choose one of:
    * give trainer workers fractional CPUs, e.g. ``ScalingConfig(resources_per_worker={"CPU": 0.5})`` on a
      2-CPU box, leaving room for this pipeline's tasks (each asks for ``data_num_cpus``, default 0.25);
    * ``materialize=True`` for small datasets (NW-UCLA, MSR, tests): the Parquet read happens here, on the
      driver's Ray, before any trainer starts; only the light transform tasks stay, and with ``data_num_cpus=0``
      they need no CPU reservation at all (they then share the cores with the trainer);
    * start Ray with more logical CPUs than trainer workers take (``ray.init(num_cpus=...)``).

Augmentation randomness changes per pass without any epoch argument: the transforms key their RNG on Ray
Data's execution index (see ``transforms.py``). Same seed, same draws: exact with ``materialize=True`` (shard
order is preserved while materialising); in streaming mode only when block contents repeat, i.e. with
``DataContext.get_current().execution_options.preserve_order = True`` on multi-shard data.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from macdiff_ray.config import ConfigError
from macdiff_ray.data.benchmarks import benchmarks_for_dataset, split_filter
from macdiff_ray.data.manifest import list_shards, load_manifest
from macdiff_ray.data.subsets import stratified_subset
from macdiff_ray.data.transforms import EvalTransform, NormStats, TrainTransform, decode_batch

__all__ = ["dataset_stats", "select_split", "SplitSelection", "make_dataset", "iter_torch", "TRANSFORM_BATCH"]

# Rows per map_batches call: large enough to amortise numpy overheads (about 25 ms per 128 rows of
# 201 frames x 20 joints on one core), small enough to keep task outputs well under Ray's block size.
TRANSFORM_BATCH = 128


def dataset_stats(data_dir: str | Path, benchmark: str) -> NormStats:
    """The manifest's per-benchmark training statistics ``{"mean": [C], "std": [C]}`` as :class:`NormStats`."""
    manifest = load_manifest(data_dir)
    _check_benchmark(data_dir, manifest, benchmark)
    stats = manifest["stats"]
    if benchmark not in stats:
        raise ConfigError(
            f"{data_dir}/manifest.json: no stats for benchmark {benchmark!r}; stats has {sorted(stats)}"
        )
    try:
        return NormStats.coerce(stats[benchmark])
    except ConfigError as e:
        raise ConfigError(f"{data_dir}/manifest.json: stats[{benchmark!r}]: {e}") from e


def _check_benchmark(data_dir: str | Path, manifest: Mapping[str, Any], benchmark: str) -> None:
    served = benchmarks_for_dataset(manifest["dataset"])
    if benchmark not in served:
        raise ConfigError(
            f"{data_dir}: dataset {manifest['dataset']!r} does not serve benchmark {benchmark!r}; it serves {served}"
        )


class SplitSelection:
    """The rows of one split (or of its labelled subset), fixed on the driver.

    Attributes: ``sample_ids`` (N,) str, ``labels`` (N,) int64, ``shards`` (the shard paths holding them).
    """

    def __init__(self, sample_ids: np.ndarray, labels: np.ndarray, shards: list[Path]):
        self.sample_ids = sample_ids
        self.labels = labels
        self.shards = shards

    def __len__(self) -> int:
        return len(self.sample_ids)


def select_split(
    data_dir: str | Path,
    benchmark: str,
    split: str,
    *,
    labeled_fraction: float | None = None,
    subset_seed: int = 0,
) -> SplitSelection:
    """Sample ids (and labels) of ``split`` of ``benchmark``, optionally reduced to a stratified subset.

    Reads only ``sample_id`` and ``label`` with the pyarrow filter ``split_filter(benchmark, split)`` pushed into
    the Parquet scan. Rows keep shard order (``sample_id`` order), so the subset drawn by
    ``stratified_subset(labels, labeled_fraction, subset_seed)`` is the same on every machine.
    """
    import pyarrow.parquet as pq

    manifest = load_manifest(data_dir)
    _check_benchmark(data_dir, manifest, benchmark)
    if split not in ("train", "test"):
        raise ConfigError(f"split: expected 'train' or 'test', got {split!r}")
    expr = split_filter(benchmark, split)
    ids_parts, label_parts, owner = [], [], []
    shards = list_shards(data_dir)
    for i, path in enumerate(shards):
        t = pq.read_table(path, columns=["sample_id", "label"], filters=expr)
        ids_parts.append(np.asarray(t.column("sample_id").to_pylist(), dtype=object))
        label_parts.append(t.column("label").to_numpy().astype(np.int64))
        owner.append(np.full(t.num_rows, i, np.int64))
    ids = np.concatenate(ids_parts) if ids_parts else np.zeros(0, object)  # (N,)
    labels = np.concatenate(label_parts) if label_parts else np.zeros(0, np.int64)  # (N,)
    owner_arr = np.concatenate(owner) if owner else np.zeros(0, np.int64)  # (N,)
    if len(np.unique(ids)) != len(ids):
        raise ValueError(f"{data_dir}: sample_id is not unique within {benchmark}/{split}")
    if labeled_fraction is not None:
        if not (isinstance(labeled_fraction, (int, float)) and 0.0 < float(labeled_fraction) <= 1.0):
            raise ConfigError(f"labeled_fraction: expected a number in (0, 1], got {labeled_fraction!r}")
        keep = stratified_subset(labels, float(labeled_fraction), subset_seed)  # (K,) sorted row indices
        ids, labels, owner_arr = ids[keep], labels[keep], owner_arr[keep]
    used = sorted(set(owner_arr.tolist()))
    return SplitSelection(ids, labels, [shards[i] for i in used])


def make_dataset(
    data_dir: str | Path,
    benchmark: str,
    split: str,
    *,
    train: bool,
    num_frames: int = 120,
    seed: int | None = 0,
    labeled_fraction: float | None = None,
    subset_seed: int = 0,
    persons: Literal["all", "first"] = "all",
    transform: Literal["auto", "decode"] | None | Callable[[dict], dict] = "auto",
    materialize: bool = False,
    data_num_cpus: float = 0.25,
    transform_batch_size: int = TRANSFORM_BATCH,
):
    """A Ray Dataset of one split of a prepared dataset, transformed for training or evaluation.

    Args:
        data_dir: prepared dataset directory (``manifest.json`` + ``shards/``).
        benchmark, split: e.g. ``"ucla-xview"``, ``"train"``.
        train: training pipeline (random shard/block order, :class:`TrainTransform`) or evaluation
            (:class:`EvalTransform`, no shuffling).
        num_frames: T0 after crop and resize.
        seed: base seed of the shard/block order and of the augmentation (None: unseeded).
        labeled_fraction, subset_seed: keep a class-stratified subset of the split (semi-supervised protocol).
        persons: ``"all"`` keeps M persons; ``"first"`` keeps the first actor only (M' = 1).
        transform: ``"auto"`` picks Train/EvalTransform with the manifest's stats for ``benchmark``; ``None``
            skips it (rows come out as stored: ``x`` (M, T_max, V, C) float32 plus every Parquet column);
            ``"decode"`` skips it and keeps only the columns the device transforms read
            (:data:`macdiff_ray.data.device_transforms.DECODE_COLUMNS`: the CPU only decodes Parquet); or any
            batch-in/batch-out numpy callable.
        materialize: read the selected rows into the object store now (small datasets; see the module notes on
            CPU starvation). The random transform still runs per pass, so augmentation stays fresh each epoch.
        data_num_cpus: logical CPUs each read/transform task asks for (fractional keeps room for trainers; 0 means
            the tasks never wait for a CPU).
        transform_batch_size: rows per transform call.

    Returns:
        ``ray.data.Dataset`` whose rows have ``x``, ``x_view`` float32 (M', T0, V, C), ``label`` int64 and
        ``person_valid`` bool (M',) (with a transform).
    """
    from ray.data.datasource import FileShuffleConfig
    from ray.data.expressions import col

    if not isinstance(train, bool):
        raise ConfigError(f"train: expected true/false, got {train!r}")
    if persons not in ("all", "first"):
        raise ConfigError(f"persons: expected 'all' or 'first', got {persons!r}")
    if data_num_cpus < 0:
        raise ConfigError(f"data_num_cpus: must be >= 0, got {data_num_cpus}")
    if transform_batch_size < 1:
        raise ConfigError(f"transform_batch_size: must be >= 1, got {transform_batch_size}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ConfigError(f"seed: expected a non-negative integer or None, got {seed!r}")

    selection = select_split(data_dir, benchmark, split, labeled_fraction=labeled_fraction, subset_seed=subset_seed)
    if len(selection) == 0:
        raise ValueError(f"{data_dir}: benchmark {benchmark!r} split {split!r} selects no rows")

    fn: Callable[[dict], dict] | None
    keep_columns = None
    if transform == "decode":
        from macdiff_ray.data.device_transforms import DECODE_COLUMNS

        fn, keep_columns = None, list(DECODE_COLUMNS)
    elif transform == "auto":
        stats = dataset_stats(data_dir, benchmark)
        if train:
            fn = TrainTransform(stats, num_frames=num_frames, persons=persons, seed=seed)
        else:
            fn = EvalTransform(stats, num_frames=num_frames, persons=persons)
    elif transform is None or callable(transform):
        fn = transform
    else:
        raise ConfigError(f"transform: expected 'auto', 'decode', None or a callable, got {transform!r}")

    read_kwargs: dict[str, Any] = {"num_cpus": data_num_cpus}
    if train and not materialize:
        read_kwargs["shuffle"] = FileShuffleConfig(seed=seed, reseed_after_execution=True)
    paths = [str(p) for p in selection.shards]
    ds = _read_parquet(paths, **read_kwargs)
    ds = ds.filter(expr=col("sample_id").is_in(selection.sample_ids.tolist()))

    if materialize:
        # Keep shard order while materialising, so that block contents (hence the per-batch augmentation
        # draws) are the same on every build with the same seed. Cheap here: the data is small by assumption.
        ds.context.execution_options.preserve_order = True
        ds = ds.materialize()
        # Small blocks give the per-pass block-order randomisation something to permute.
        target_blocks = max(1, math.ceil(len(selection) / transform_batch_size))
        ds = ds.repartition(target_blocks).materialize()
        if train:
            from ray.data import RandomSeedConfig

            ds = ds.randomize_block_order(seed=RandomSeedConfig(seed=seed, reseed_after_execution=True))

    if keep_columns is not None:
        ds = ds.select_columns(keep_columns)
    if fn is not None:
        ds = ds.map_batches(
            fn,
            batch_format="numpy",
            batch_size=transform_batch_size,
            num_cpus=data_num_cpus,
            zero_copy_batch=True,
        )
    return ds


def _read_parquet(paths: list[str], **kwargs: Any):
    """``ray.data.read_parquet`` with the file-based (V1) Parquet datasource and one block per shard.

    Measured on the 2-core test box (NW-UCLA train split, 2 shards, Ray 2.60): the default V2 datasource spends
    about 2.4 s of wall time per pass in its ``ListFiles`` task and reads all shards in one task (2.3-5.3 s per
    pass), against 0.7 s for V1. One block per shard lets Ray fuse the read with the transform in one task per
    shard. Predicate pushdown of ``Dataset.filter(expr=...)`` and ``FileShuffleConfig`` work with both.
    """
    import ray.data
    from ray.data import DataContext

    ctx = DataContext.get_current()
    previous = getattr(ctx, "use_datasource_v2", None)
    if previous is not None:
        ctx.use_datasource_v2 = False
    try:
        return ray.data.read_parquet(paths, override_num_blocks=max(1, len(paths)), **kwargs)
    finally:
        if previous is not None:
            ctx.use_datasource_v2 = previous


def iter_torch(
    ds_or_shard: Any,
    batch_size: int,
    *,
    shuffle: bool,
    drop_last: bool = False,
    seed: int | None = None,
    shuffle_buffer: int | None = None,
    prefetch_batches: int = 2,
) -> Iterator[dict[str, "torch.Tensor"]]:  # noqa: F821 - torch imported lazily
    """Batches of a Ray ``Dataset`` or Train ``DataIterator`` as dicts of CPU torch tensors.

    Numeric columns become tensors (``x``/``x_view`` float32 (B, M, T, V, C), ``label`` int64 (B,),
    ``person_valid`` bool (B, M) after a transform); string columns (``sample_id``, ``split``) are dropped.
    ``shuffle`` mixes rows through a local buffer of ``shuffle_buffer`` rows (default ``max(8 * batch_size,
    1024)``) seeded by ``seed`` (pass ``seed + epoch`` for a different, reproducible order per epoch).
    """
    import torch

    if batch_size < 1:
        raise ConfigError(f"batch_size: must be >= 1, got {batch_size}")
    buffer = None
    if shuffle:
        buffer = shuffle_buffer if shuffle_buffer is not None else max(8 * batch_size, 1024)
        if buffer < 1:
            raise ConfigError(f"shuffle_buffer: must be >= 1, got {buffer}")
    it = ds_or_shard.iter_batches(
        batch_size=batch_size,
        batch_format="numpy",
        drop_last=drop_last,
        local_shuffle_buffer_size=buffer,
        local_shuffle_seed=seed if shuffle else None,
        prefetch_batches=prefetch_batches,
    )
    for batch in it:
        data = decode_batch(batch) if "x" in batch and not _is_decoded(batch["x"]) else batch
        yield {
            k: torch.from_numpy(_writable(v))
            for k, v in data.items()
            if isinstance(v, np.ndarray) and v.dtype.kind in "biuf"
        }


def _writable(v: np.ndarray) -> np.ndarray:
    """Ray may hand over read-only zero-copy views; torch needs a writable, contiguous array."""
    if v.flags.writeable and v.flags.c_contiguous:
        return v
    return np.array(v, copy=True, order="C")


def _is_decoded(x: Any) -> bool:
    return isinstance(x, np.ndarray) and x.dtype.kind == "f" and x.ndim == 5


def read_transformed(
    shards: Sequence[str | Path],
    sample_ids: Sequence[str],
    transform: Callable[[Any], dict],
    *,
    read_batch: int = 256,
    extra_columns: Sequence[str] = (),
) -> dict[str, np.ndarray]:
    """Read the rows ``sample_ids`` from ``shards`` in this process and apply ``transform`` (e.g. EvalTransform).

    For small selections that a driver or actor needs in memory (augmentation sources, generative test sets).
    Returns ``x`` (N, M, T0, V, C) float32, ``person_valid`` (N, M) bool, ``label`` (N,) int64, ``sample_id``
    (N,) object, plus each of ``extra_columns`` as a plain list; rows in shard order.
    """
    import pyarrow.parquet as pq

    wanted = pa.array([str(i) for i in sample_ids], pa.string())
    xs, valids, labels, sids = [], [], [], []
    extra: dict[str, list] = {c: [] for c in extra_columns}
    for shard in shards:
        table = pq.read_table(shard, filters=pc.field("sample_id").isin(wanted))
        for a in range(0, table.num_rows, read_batch):
            part = table.slice(a, read_batch)
            out = transform(part)
            xs.append(out["x"])  # (B, M, T0, V, C)
            valids.append(out["person_valid"])  # (B, M)
            labels.append(out["label"])  # (B,)
            sids.extend(part.column("sample_id").to_pylist())
            for c in extra_columns:
                extra[c].extend(part.column(c).to_pylist())
    if not xs:
        raise ValueError(f"none of the {len(sample_ids)} selected rows was found in {len(shards)} shard(s)")
    return {"x": np.ascontiguousarray(np.concatenate(xs), np.float32),
            "person_valid": np.concatenate(valids).astype(bool), "label": np.concatenate(labels).astype(np.int64),
            "sample_id": np.asarray(sids, dtype=object), **extra}


class InMemorySplit:
    """One split of a small prepared dataset in this process's memory, with the part of a Ray ``Dataset``'s
    ``iter_batches`` that the protocols use. For Ray Train's local mode (``num_workers=0``: the train function runs
    in the driver): no Ray Data task is scheduled per pass, which on a small dataset costs more than the pass.

    ``rows``: the stored columns (``x`` (N, M, T_max, V, C) float32, ``length``, ``num_persons``, ``label``,
    ``sample_id``, ...); ``transform``: a batch-in/batch-out callable (Train/EvalTransform), applied per batch on
    every pass, so a seeded TrainTransform draws new crops and rotations each epoch (its call counter advances)."""

    def __init__(self, rows: Mapping[str, np.ndarray], transform: Callable[[dict], dict] | None):
        self.rows = dict(rows)
        self.transform = transform
        self._n = int(len(self.rows["label"]))

    def count(self) -> int:
        return self._n

    def iter_batches(self, *, batch_size: int, batch_format: str = "numpy", drop_last: bool = False,
                     local_shuffle_buffer_size: int | None = None, local_shuffle_seed: int | None = None,
                     prefetch_batches: int = 0) -> Iterator[dict]:
        if batch_format != "numpy":
            raise ValueError(f"InMemorySplit.iter_batches: only batch_format='numpy', got {batch_format!r}")
        # A shuffle buffer asked for = a full in-memory shuffle (the buffer's purpose, without its bound).
        order = (np.random.default_rng(local_shuffle_seed).permutation(self._n) if local_shuffle_buffer_size
                 else np.arange(self._n))
        for a in range(0, self._n, batch_size):
            idx = order[a:a + batch_size]
            if drop_last and len(idx) < batch_size:
                break
            batch = {k: v[idx] for k, v in self.rows.items()}
            yield self.transform(batch) if self.transform is not None else batch


def read_rows(shards: Sequence[str | Path], sample_ids: Sequence[str]) -> dict[str, np.ndarray]:
    """The stored columns of rows ``sample_ids`` (shard order), decoded: ``x`` (N, M, T_max, V, C) float32 and
    every other column as a 1-D array."""
    import pyarrow.parquet as pq

    wanted = pa.array([str(i) for i in sample_ids], pa.string())
    parts = [decode_batch(pq.read_table(str(s), filters=pc.field("sample_id").isin(wanted))) for s in shards]
    parts = [p for p in parts if len(p["label"])]
    if not parts:
        raise ValueError(f"none of the {len(sample_ids)} selected rows was found in {len(shards)} shard(s)")
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def make_memory_dataset(data_dir: str | Path, benchmark: str, split: str, *, train: bool, num_frames: int = 120,
                        seed: int | None = 0, labeled_fraction: float | None = None, subset_seed: int = 0,
                        persons: Literal["all", "first"] = "all") -> InMemorySplit:
    """:func:`make_dataset`'s selection and transforms, held in memory (see :class:`InMemorySplit`)."""
    selection = select_split(data_dir, benchmark, split, labeled_fraction=labeled_fraction, subset_seed=subset_seed)
    if len(selection) == 0:
        raise ValueError(f"{data_dir}: benchmark {benchmark!r} split {split!r} selects no rows")
    stats = dataset_stats(data_dir, benchmark)
    fn = (TrainTransform(stats, num_frames=num_frames, persons=persons, seed=seed) if train
          else EvalTransform(stats, num_frames=num_frames, persons=persons))
    return InMemorySplit(read_rows(selection.shards, selection.sample_ids), fn)
