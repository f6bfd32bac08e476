"""Diffusion-based augmentation (paper Sec. 3.4): pure torch core, a Ray actor pool overlapped with
fine-tuning, and offline augmented shards.

- :func:`augment_batch` (core): one-step denoising from t_s, conditioned on each person's own encoding (pretraining
  masks by default, or unmasked: ``condition``).
- :func:`build_augmenter` (pool): ``prefetch(epoch)`` / ``collect(epoch)`` / ``wait_seconds`` / ``shutdown()``.
- :func:`write_augmented_dataset` (offline): augmented Parquet shards + manifest, loadable by ``make_dataset``.
"""

from macdiff_ray.augment.core import (
    AUG_CONDITIONS,
    augment_batch,
    epoch_chunk_seed,
    num_augmented,
    masked_passes_predict,
    num_mask_passes,
    one_step_gap_bound,
    plan_sources,
    unmasked_condition,
)
from macdiff_ray.augment.offline import AUGMENTED_FORMAT, save_random_checkpoint, write_augmented_dataset
from macdiff_ray.augment.pool import (
    AugmentPool,
    AugmentWorker,
    DiffusionAugmenter,
    Sources,
    build_augmenter,
    load_sources,
    model_bundle,
)

__all__ = [
    "AUG_CONDITIONS",
    "augment_batch",
    "unmasked_condition",
    "masked_passes_predict",
    "num_mask_passes",
    "plan_sources",
    "num_augmented",
    "one_step_gap_bound",
    "epoch_chunk_seed",
    "Sources",
    "load_sources",
    "model_bundle",
    "AugmentWorker",
    "AugmentPool",
    "DiffusionAugmenter",
    "build_augmenter",
    "write_augmented_dataset",
    "save_random_checkpoint",
    "AUGMENTED_FORMAT",
]
