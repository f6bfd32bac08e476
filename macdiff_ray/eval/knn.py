"""kNN probe on frozen features: cheap (one embedding pass, no training), the proxy metric of sweeps.

Weighted cosine kNN (InstDisc-style): each of the ``k`` nearest training features votes for its class with weight
``exp(sim / temperature)``. Features are L2-normalised. ``run_knn`` embeds both splits through the Ray Data actor
pool of :mod:`macdiff_ray.eval.embed` and writes ``results.json`` (no training: ``*_last`` == ``*_best``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal, Optional

import torch

from macdiff_ray.config import ConfigError, absolute_paths, to_dict


def knn_scores(train_f: torch.Tensor, train_y: torch.Tensor, test_f: torch.Tensor, num_classes: int, k: int = 20,
               temperature: float = 0.07, chunk: int = 512) -> torch.Tensor:
    """Class scores (Q, classes) for test features (Q, F) from train features (N, F) and labels (N,)."""
    if k < 1 or temperature <= 0:
        raise ValueError(f"knn: k must be >= 1 and temperature > 0, got k={k}, temperature={temperature}")
    tr = torch.nn.functional.normalize(train_f.float(), dim=1)  # (N, F)
    te = torch.nn.functional.normalize(test_f.float(), dim=1)  # (Q, F)
    k = min(k, tr.shape[0])
    out = []
    for i in range(0, te.shape[0], chunk):
        sim = te[i:i + chunk] @ tr.T  # (q, N)
        s, idx = sim.topk(k, dim=1)  # (q, k)
        w = (s / temperature).exp()  # (q, k)
        votes = torch.zeros(sim.shape[0], num_classes, dtype=w.dtype)  # (q, classes)
        votes.scatter_add_(1, train_y[idx], w)
        out.append(votes)
    return torch.cat(out)  # (Q, classes)


@dataclass(frozen=True)
class KnnConfig:
    data_dir: str = ""
    benchmark: str = ""
    checkpoint: Optional[str] = None
    random_init: bool = False
    preset: Optional[Literal["paper", "small", "tiny"]] = None
    joint_map: Optional[str] = None
    feature: Literal["pooled", "per_joint"] = "pooled"
    num_frames: int = 120
    k: int = 20
    temperature: float = 0.07
    num_actors: int = 1
    batch_size: int = 64
    seed: int = 0
    output: str = ""
    label: str = ""

    def __post_init__(self) -> None:
        if bool(self.checkpoint) == bool(self.random_init):
            raise ConfigError("KnnConfig: give exactly one of checkpoint or random_init (with preset)")
        if self.random_init and not self.preset:
            raise ConfigError("KnnConfig.random_init: needs preset")
        if self.k < 1 or self.temperature <= 0 or self.num_actors < 1:
            raise ConfigError(f"KnnConfig: k {self.k} >= 1, temperature {self.temperature} > 0, num_actors "
                              f"{self.num_actors} >= 1 required")


def run_knn(cfg: KnnConfig) -> dict:
    """Embed train and test, classify test by kNN; writes ``results.json`` when ``cfg.output`` is set."""
    cfg = absolute_paths(cfg, "data_dir", "checkpoint", "joint_map", "output")
    from macdiff_ray.eval.embed import collect_features, embed_split
    from macdiff_ray.eval.features import describe_eval_data
    from macdiff_ray.eval.probe import topk_correct
    from macdiff_ray.train.checkpoint import code_version
    from macdiff_ray.train.logging import join, write_json
    from macdiff_ray.train.runtime import init_ray

    t0 = time.perf_counter()
    info = describe_eval_data(cfg.data_dir, cfg.benchmark)
    init_ray(quiet=True)
    kw = dict(checkpoint=cfg.checkpoint, preset=cfg.preset, feature=cfg.feature, num_frames=cfg.num_frames,
              num_actors=cfg.num_actors, batch_size=cfg.batch_size, seed=cfg.seed, joint_map=cfg.joint_map)
    _, ytr, ftr = collect_features(embed_split(cfg.data_dir, cfg.benchmark, "train", **kw))
    _, yte, fte = collect_features(embed_split(cfg.data_dir, cfg.benchmark, "test", **kw))
    scores = knn_scores(torch.from_numpy(ftr), torch.from_numpy(ytr), torch.from_numpy(fte), info["num_classes"],
                        cfg.k, cfg.temperature)  # (Q, classes)
    c1, c5 = topk_correct(scores, torch.from_numpy(yte))
    n = len(yte)
    res = {"protocol": "knn",
           "label": cfg.label or (f"random-init {cfg.preset} (kNN)" if cfg.random_init else "MacDiff (kNN)"),
           "config": to_dict(cfg), "data": {k: info[k] for k in ("dataset", "benchmark", "num_classes")},
           "top1_last": c1 / n, "top5_last": c5 / n, "top1_best": c1 / n, "top5_best": c5 / n,
           "selection_note": "kNN has no training epochs: last == best", "num_train": int(len(ytr)),
           "num_test": int(n), "feature_dim": int(ftr.shape[1]), "wall_time_s": time.perf_counter() - t0,
           "code_version": code_version()}
    if cfg.output:
        write_json(join(cfg.output, "results.json"), res)
    return res


def raw_nearest_neighbour(data_dir: str, benchmark: str, num_frames: int, *, crop: float = 0.95,
                          output: str = "", label: str = "") -> dict:
    """1-NN on raw coordinates, the trivial baseline: each test sequence takes the label of the training sequence
    nearest in Euclidean distance, both passed through the evaluation transform (centre crop, resize to
    ``num_frames``, the benchmark's normalisation) and flattened; persons averaged over the valid ones. In this
    process, no Ray. Writes ``results.json`` when ``output`` is set."""
    from macdiff_ray.data.pipeline import dataset_stats, read_transformed, select_split
    from macdiff_ray.data.transforms import EvalTransform
    from macdiff_ray.eval.features import describe_eval_data, encode_persons
    from macdiff_ray.train.checkpoint import code_version
    from macdiff_ray.train.logging import join, write_json

    t0 = time.perf_counter()
    info = describe_eval_data(data_dir, benchmark)
    tf = EvalTransform(dataset_stats(data_dir, benchmark), num_frames=num_frames, crop=crop)
    feats = {}
    for split in ("train", "test"):
        sel = select_split(data_dir, benchmark, split)
        rows = read_transformed(sel.shards, sel.sample_ids, tf)
        x, pv = torch.from_numpy(rows["x"]), torch.from_numpy(rows["person_valid"])  # (N, M, T, V, C), (N, M)
        feats[split] = (encode_persons(None, x, pv, "raw").flatten(1), torch.from_numpy(rows["label"]))  # (N, F)
    (ftr, ytr), (fte, yte) = feats["train"], feats["test"]
    nearest = torch.cdist(fte, ftr).argmin(1)  # (Q,)
    acc = float((ytr[nearest] == yte).float().mean())
    res = {"protocol": "1nn-raw", "label": label or "1-NN, raw coordinates", "top1_last": acc, "top1_best": acc,
           "top5_last": None, "top5_best": None, "data": {k: info[k] for k in ("dataset", "benchmark", "num_classes")},
           "num_frames": num_frames, "num_train": int(len(ytr)), "num_test": int(len(yte)),
           "selection_note": "no training: last == best", "wall_time_s": time.perf_counter() - t0,
           "code_version": code_version()}
    if output:
        write_json(join(output, "results.json"), res)
    return res
