"""The cheap proxy metric of sweeps: kNN top-1 on frozen pooled encoder features (train split vs test split).

Both splits are read once per trial with :func:`macdiff_ray.data.benchmarks.read_split` and the evaluation transform
(centre crop, resize, normalisation with the benchmark's training statistics), in the trial process, no Ray Data
(so the proxy never competes with the training pipeline for CPUs). Every ``every`` epochs (and after the last) the
encoder, in eval mode and without gradients, embeds both splits (person-averaged pooled features, ``(N, D)``) and a
weighted cosine kNN (``k`` neighbours, weights ``exp(sim / temperature)``; :func:`macdiff_ray.eval.knn.knn_scores`)
classifies the test split. The result is ``knn_top1`` in [0, 1] plus ``knn_time_s``.
"""

from __future__ import annotations

import time
from typing import Optional

import numpy as np
import torch

from macdiff_ray.config import ConfigError


class KnnProxy:
    """kNN top-1 of ``net.encoder`` on ``benchmark``'s test split, neighbours from its train split.

    ``KnnProxy(data_dir, benchmark, num_frames, persons, k=20, temperature=0.07, every=1, last_epoch=E,
    max_train=None, batch_size=128)``; ``__call__(net, epoch, device) -> {"knn_top1", "knn_time_s"}`` or ``{}``
    on epochs without an evaluation.
    """

    def __init__(self, data_dir: str, benchmark: str, num_frames: int, persons: str = "first", *, k: int = 20,
                 temperature: float = 0.07, every: int = 1, last_epoch: Optional[int] = None,
                 max_train: Optional[int] = None, batch_size: int = 128, seed: int = 0):
        if every < 1 or k < 1 or batch_size < 1:
            raise ConfigError(f"KnnProxy: every={every}, k={k}, batch_size={batch_size} must be >= 1")
        self.k, self.temperature, self.every, self.last_epoch = k, temperature, every, last_epoch
        self.batch_size = batch_size
        self.train = self._load(data_dir, benchmark, "train", num_frames, persons)
        self.test = self._load(data_dir, benchmark, "test", num_frames, persons)
        if len(self.train[2]) == 0 or len(self.test[2]) == 0:
            raise ConfigError(f"KnnProxy: {data_dir} benchmark {benchmark!r} has an empty train or test split "
                              f"({len(self.train[2])} / {len(self.test[2])} rows); the kNN proxy needs both")
        if max_train is not None and max_train < len(self.train[2]):
            from macdiff_ray.data.subsets import stratified_subset

            labels = self.train[2].numpy()
            idx = stratified_subset(labels, max_train / len(labels), seed)
            idx = torch.as_tensor(np.sort(idx))
            self.train = tuple(t[idx] for t in self.train)
        self.num_classes = int(max(self.train[2].max(), self.test[2].max())) + 1

    @staticmethod
    def _load(data_dir: str, benchmark: str, split: str, num_frames: int, persons: str):
        """(x (N, M, T0, V, C) float32, person_valid (N, M) bool, label (N,) int64) of one split."""
        from macdiff_ray.data.benchmarks import read_split
        from macdiff_ray.data.pipeline import dataset_stats
        from macdiff_ray.data.transforms import EvalTransform

        table = read_split(data_dir, benchmark, split)
        transform = EvalTransform(dataset_stats(data_dir, benchmark), num_frames, persons=persons)
        out = transform(table)  # numpy batch dict
        x = torch.from_numpy(np.ascontiguousarray(out["x"], dtype=np.float32))  # (N, M, T0, V, C)
        valid = torch.from_numpy(np.asarray(out["person_valid"], dtype=bool))  # (N, M)
        label = torch.from_numpy(np.asarray(out["label"], dtype=np.int64))  # (N,)
        return x, valid, label

    def due(self, epoch: int) -> bool:
        return epoch % self.every == 0 or (self.last_epoch is not None and epoch >= self.last_epoch)

    @torch.no_grad()
    def features(self, encoder: torch.nn.Module, x: torch.Tensor, valid: torch.Tensor,
                 device: torch.device) -> torch.Tensor:
        """Person-averaged pooled features ``(N, D)`` (float32, CPU) of ``x (N, M, T0, V, C)``."""
        from macdiff_ray.eval.features import encode_persons

        chunks = []
        for i in range(0, x.shape[0], self.batch_size):
            xb = x[i:i + self.batch_size].to(device)  # (b, M, T0, V, C)
            vb = valid[i:i + self.batch_size].to(device)  # (b, M)
            chunks.append(encode_persons(encoder, xb, vb, "pooled").float().cpu())  # (b, D)
        return torch.cat(chunks)  # (N, D)

    def evaluate(self, encoder: torch.nn.Module, device: torch.device) -> float:
        """kNN top-1 accuracy in [0, 1] (the encoder's train/eval mode is restored afterwards)."""
        from macdiff_ray.eval.knn import knn_scores

        if encoder is None:
            raise ValueError("kNN proxy: this model has no encoder (a decoder-only method: ddim, mdm); sweep it on "
                             "another metric (tune.metric: loss)")

        was_training = encoder.training
        encoder.eval()
        try:
            f_tr = self.features(encoder, self.train[0], self.train[1], device)  # (N, D)
            f_te = self.features(encoder, self.test[0], self.test[1], device)  # (Q, D)
        finally:
            encoder.train(was_training)
        scores = knn_scores(f_tr, self.train[2], f_te, self.num_classes, k=self.k,
                            temperature=self.temperature)  # (Q, classes)
        return float((scores.argmax(1) == self.test[2]).float().mean())

    def __call__(self, net: torch.nn.Module, epoch: int, device: torch.device) -> dict:
        if not self.due(epoch):
            return {}
        t0 = time.perf_counter()
        top1 = self.evaluate(net.encoder, device)
        return {"knn_top1": top1, "knn_time_s": time.perf_counter() - t0}


class ProxyMetrics:
    """The proxy as per-epoch metrics: measured on its epochs (and at the first call, so that ASHA always has a
    value), the last value carried forward (with ``knn_epoch``, the epoch it was measured at) on the others.
    ``__call__(net, epoch, device) -> {"knn_top1", "knn_time_s", "knn_epoch"}``."""

    def __init__(self, proxy: KnnProxy):
        self.proxy = proxy
        self.last: dict = {}

    def __call__(self, net: torch.nn.Module, epoch: int, device: torch.device) -> dict:
        if self.proxy.due(epoch) or not self.last:
            t0 = time.perf_counter()
            top1 = self.proxy.evaluate(net.encoder, device)
            self.last = {"knn_top1": top1, "knn_time_s": time.perf_counter() - t0, "knn_epoch": epoch}
        return dict(self.last)
