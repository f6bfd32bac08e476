"""Batches of one split read straight from the prepared Parquet shards with pyarrow: no Ray (issue 16).

For a bare GPU box (``benchmarks/gpu.py``) and framework-free training loops. The CPU only reads and decodes
(``x`` (B, M, T_max, V, C), ``length``, ``num_persons``, ``label``, :data:`~macdiff_ray.data.device_transforms.
DECODE_COLUMNS`); the transforms run on the training device (:mod:`macdiff_ray.data.device_transforms`).

Memory stays bounded by the shards in flight: one shard is decoded at a time in a background thread (pyarrow
releases the GIL while it reads and decompresses), at most ``prefetch`` decoded shards wait in the queue, and rows
are served from the current shard plus the leftover of the previous one. Training order: shard order permuted per
epoch, rows permuted within each shard (``seed``, ``epoch``); evaluation keeps manifest order.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterator, Optional

import numpy as np
import torch

from macdiff_ray.data.benchmarks import split_filter
from macdiff_ray.data.device_transforms import DECODE_COLUMNS
from macdiff_ray.data.manifest import list_shards, load_manifest
from macdiff_ray.data.transforms import decode_batch

__all__ = ["ShardBatches"]

_DONE = object()


class ShardBatches:
    """``ShardBatches(data_dir, benchmark, split, batch_size=..., shuffle=..., seed=0, drop_last=..., prefetch=2,
    pin_memory=False)``; ``for batch in reader.epoch(e)`` yields dicts of CPU torch tensors (pinned when asked,
    for asynchronous copies to a GPU). ``len(reader)`` is the number of rows of the split."""

    def __init__(self, data_dir: str, benchmark: str, split: str, *, batch_size: int, shuffle: bool, seed: int = 0,
                 drop_last: bool = False, prefetch: int = 2, pin_memory: bool = False):
        if batch_size < 1 or prefetch < 1:
            raise ValueError(f"ShardBatches: batch_size and prefetch must be >= 1, got {batch_size}, {prefetch}")
        manifest = load_manifest(data_dir)
        if benchmark not in manifest["split_counts"]:
            raise ValueError(f"{data_dir}: benchmark {benchmark!r} is not served; it serves "
                             f"{sorted(manifest['split_counts'])}")
        self.data_dir, self.benchmark, self.split = str(data_dir), benchmark, split
        self.rows = int(manifest["split_counts"][benchmark][split])
        self.shards = list_shards(data_dir)
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.prefetch, self.pin_memory = prefetch, pin_memory
        self._filter = split_filter(benchmark, split)

    def __len__(self) -> int:
        return self.rows

    def num_batches(self) -> int:
        return self.rows // self.batch_size if self.drop_last else -(-self.rows // self.batch_size)

    def _read(self, path: str) -> dict[str, np.ndarray]:
        import pyarrow.parquet as pq

        from macdiff_ray.storage import resolve

        fs, inner = resolve(path)
        table = pq.read_table(inner, filesystem=fs, columns=list(DECODE_COLUMNS), filters=self._filter)
        data = decode_batch(table)
        return {k: data[k] for k in DECODE_COLUMNS}

    def _shard_stream(self, order: list[int], out: "queue.Queue", stop: threading.Event) -> None:
        try:
            for i in order:
                if stop.is_set():
                    return
                out.put(self._read(self.shards[i]))
            out.put(_DONE)
        except BaseException as e:  # noqa: BLE001 - re-raised in the consumer
            out.put(e)

    def epoch(self, epoch: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        rng = np.random.default_rng([self.seed, epoch]) if self.shuffle else None
        order = list(rng.permutation(len(self.shards))) if rng is not None else list(range(len(self.shards)))
        q: "queue.Queue" = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        worker = threading.Thread(target=self._shard_stream, args=(order, q, stop), daemon=True)
        worker.start()
        left: Optional[dict[str, np.ndarray]] = None
        try:
            while True:
                item = q.get()
                if isinstance(item, BaseException):
                    raise item
                if item is _DONE:
                    break
                n = len(item["label"])
                if n == 0:
                    continue
                if rng is not None:
                    perm = rng.permutation(n)
                    item = {k: v[perm] for k, v in item.items()}
                if left is not None:
                    item = {k: np.concatenate([left[k], item[k]]) for k in item}
                n = len(item["label"])
                full = n - n % self.batch_size
                for a in range(0, full, self.batch_size):
                    yield self._tensors({k: v[a:a + self.batch_size] for k, v in item.items()})
                left = {k: v[full:] for k, v in item.items()} if full < n else None
            if left is not None and not self.drop_last:
                yield self._tensors(left)
        finally:
            stop.set()
            while worker.is_alive():  # unblock a producer waiting on a full queue
                try:
                    q.get_nowait()
                except queue.Empty:
                    worker.join(timeout=0.05)

    def _tensors(self, part: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        out = {}
        for k, v in part.items():
            v = v if k == "x" else v.astype(np.int64)
            if not (v.flags.writeable and v.flags.c_contiguous):  # Arrow hands out read-only views
                v = np.array(v, order="C")
            t = torch.from_numpy(v)
            out[k] = t.pin_memory() if self.pin_memory else t
        return out
