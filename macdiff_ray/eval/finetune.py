"""Fine-tuning and the semi-supervised protocol on Ray Train (METHOD.md "Fine-tuning", "Semi-supervised").

MLP head on the (unfrozen) encoder, AdamW lr 3e-4 -> 1e-5 with 5 warmup epochs, layer-wise lr decay 0.8, drop path
0.3, head dropout 0.3, label smoothing 0.1, 100 epochs. ``labeled_fraction`` trains on the class-stratified subset
of the data layer (``select_split``/``stratified_subset``: fixed on the driver, identical on every worker).
``seeds`` repeats the run (``OUTPUT/seed_<s>/``) and ``OUTPUT/results.json`` reports mean and std over seeds.
``random_init`` with ``preset`` trains the same encoder from scratch (the supervised baseline).

Augmentation hook: ``run_finetune(cfg, augmenter=obj)`` where ``obj.prefetch(epoch)`` starts generating that
epoch's samples asynchronously and ``obj.collect(epoch) -> {"x" (N_aug, M, T0, V, C) normalised, "person_valid"
(N_aug, M), "label" (N_aug,)}`` blocks until they are ready. The loop calls ``prefetch(start_epoch)`` before
training, and at the start of epoch e ``prefetch(e + 1)`` then ``collect(e)`` (rank 0; the samples are broadcast
and worker r keeps rows ``r::world``), mixing them into epoch e's batches (one chunk appended per step). The time
blocked in collect is reported per epoch (``aug_wait_s``), in total (``aug_wait_total_s``) and as the stalled
fraction of epoch time (``aug_stalled_fraction``).
"""

from __future__ import annotations

import math
from typing import Any

from macdiff_ray.config import ConfigError, absolute_paths, replace
from macdiff_ray.eval.configs import FinetuneConfig  # noqa: F401  (re-exported: its home before eval/configs.py)
from macdiff_ray.eval.probe import run_protocol
from macdiff_ray.train.logging import join, write_json


def labeled_indices(cfg: FinetuneConfig):
    """The labelled training rows (sample ids, labels) used for training and as augmentation sources."""
    from macdiff_ray.data.pipeline import select_split

    return select_split(cfg.data_dir, cfg.benchmark, "train", labeled_fraction=cfg.labeled_fraction,
                        subset_seed=cfg.subset_seed)


def _build_augmenter(cfg: FinetuneConfig, seed: int):
    try:
        from macdiff_ray.augment.pool import build_augmenter
    except ImportError as e:
        raise ConfigError(f"--augment: macdiff_ray.augment.pool.build_augmenter is not available ({e})") from e
    from macdiff_ray.train.runtime import init_ray

    init_ray()  # the augmentation actors need Ray before the Ray Train run starts it
    # The augmenter selects the same class-stratified subset through the same data-layer function
    # (select_split with labeled_fraction/subset_seed), so sources == the labelled training rows.
    return build_augmenter(cfg.checkpoint, cfg.data_dir, cfg.benchmark, t_start=cfg.t_start, ratio=cfg.aug_ratio,
                           num_actors=cfg.augment_actors, seed=seed, labeled_fraction=cfg.labeled_fraction,
                           subset_seed=cfg.subset_seed, condition=cfg.aug_condition,
                           source_transform=cfg.aug_source_transform, gpu_per_actor=cfg.augment_gpu_share)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0.0 for one value)."""
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


# Regularisation recipes (``--recipe``). "paper": METHOD.md's values for 100 NTU epochs (40k sequences).
# "small": for datasets of a few thousand sequences or fewer, where drop path 0.3, head dropout 0.3 and layer
# decay 0.8 hold a small encoder back within the same epochs; the released code's per-joint head.
RECIPES = {
    "paper": {"drop_path": 0.3, "head_dropout": 0.3, "label_smoothing": 0.1, "layer_decay": 0.8, "head": "mlp",
              "feature": "pooled"},
    "small": {"drop_path": 0.1, "head_dropout": 0.1, "label_smoothing": 0.1, "layer_decay": 0.9, "head": "bn_mlp",
              "feature": "per_joint"},
}
SMALL_DATA_SAMPLES = 10_000  # "auto" picks "small" below this many training sequences


def recipe_values(recipe: str, num_train: int) -> dict:
    """The FinetuneConfig values of ``recipe`` ("paper", "small", or "auto": by the training-split size)."""
    if recipe == "auto":
        recipe = "small" if num_train < SMALL_DATA_SAMPLES else "paper"
    if recipe not in RECIPES:
        raise ConfigError(f"recipe: {recipe!r} is not one of ['auto', {', '.join(repr(k) for k in RECIPES)}]")
    return dict(RECIPES[recipe])


KEYS = ("top1_last", "top1_best", "top5_last", "top5_best")


def seed_means(runs: list[dict]) -> dict:
    """``{k: mean, k_std: sample std}`` over the runs of several seeds, for every accuracy key of :data:`KEYS`."""
    out = {}
    for k in KEYS:
        out[k], out[f"{k}_std"] = mean_std([r[k] for r in runs])
    return out


def _run_one(cfg: FinetuneConfig, seed: int, augmenter: Any, quiet: bool) -> dict:
    """One fine-tuning run. An augmenter built here (``cfg.augment`` and none given) is shut down afterwards: its
    actors hold CPUs for as long as they live (a sweep's next trial, or the next seed, would wait for them)."""
    own = augmenter is None and cfg.augment
    aug = _build_augmenter(cfg, seed) if own else augmenter
    try:
        return run_protocol(cfg, "finetune", augmenter=aug, quiet=quiet)
    finally:
        if own:
            aug.shutdown()


def run_finetune(cfg: FinetuneConfig, *, augmenter: Any = None, quiet: bool = False) -> dict:
    """One run per seed (``cfg.seeds``, or ``cfg.seed``); with several seeds, ``OUTPUT/results.json`` holds the
    mean (``top1_last`` ...) and std (``top1_last_std`` ...) over seeds and each seed's run is in
    ``OUTPUT/seed_<s>/``. ``augmenter``: see the module docstring (built from ``cfg.augment`` when None)."""
    cfg = absolute_paths(cfg, "data_dir", "checkpoint", "joint_map", "output")
    seeds = list(cfg.seeds) or [cfg.seed]
    if len(seeds) == 1 and not cfg.seeds:
        return _run_one(cfg, cfg.seed, augmenter, quiet)
    runs = []
    for s in seeds:
        sub = replace(cfg, seed=s, seeds=[], output=join(cfg.output, f"seed_{s}"))
        runs.append(_run_one(sub, s, augmenter, quiet))
    out = dict(runs[0])
    out.pop("history", None)
    out.update(seed_means(runs))
    out.update(seeds=seeds, num_seeds=len(seeds), per_seed={str(s): {k: r[k] for k in KEYS} for s, r in zip(seeds, runs)},
               wall_time_s=sum(r["wall_time_s"] for r in runs), config=dict(runs[0]["config"], seeds=seeds,
                                                                            output=cfg.output, seed=cfg.seed),
               aggregate_note="top*_last/best are means over seeds; *_std the sample std (ddof=1)")
    write_json(join(cfg.output, "results.json"), out)
    return out


def finetune_smoke_overrides() -> dict:
    return {"epochs": 2, "batch_size": 16, "max_steps_per_epoch": 2, "num_frames": 32, "checkpoint_every": 1,
            "warmup_epochs": 1.0, "smoke_test": True, "materialize": True}
