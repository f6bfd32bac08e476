"""The configs of the supervised evaluation protocols: fields every protocol shares (:class:`EvalCommon`), the linear
probe (:class:`LinearEvalConfig`) and fine-tuning (:class:`FinetuneConfig`).

They live apart from the runners so that ``probe`` (the shared Ray Train runner, which rebuilds either config on
the worker side) and ``finetune`` (seeds, recipes, augmentation) both import them and neither imports the other
back: the import graph runs configs <- probe <- finetune, with no circle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from macdiff_ray.config import ConfigError
from macdiff_ray.train.tracking import TrackingConfig

__all__ = ["EVAL_RESUMABLE", "EvalCommon", "LinearEvalConfig", "FinetuneConfig"]

EVAL_RESUMABLE = frozenset({"epochs", "num_workers", "use_gpu", "cpus_per_worker", "checkpoint_every",
                            "keep_checkpoints", "max_failures", "data_dir", "output", "smoke_test", "eval_every",
                            "materialize", "tracking"})


@dataclass(frozen=True)
class EvalCommon:
    """Fields shared by every supervised protocol. ``batch_size`` is GLOBAL."""

    data_dir: str = ""
    benchmark: str = ""
    num_frames: int = 120
    checkpoint: Optional[str] = None  # checkpoint dir, .pt file, run dir or URI (resolve_checkpoint)
    random_init: bool = False  # untrained encoder of `preset` (baseline)
    preset: Optional[Literal["paper", "small", "tiny"]] = None
    joint_map: Optional[str] = None  # JSON/YAML joint map for a transfer across layouts
    feature: Literal["pooled", "per_joint", "raw"] = "pooled"
    epochs: int = 100
    batch_size: int = 128
    augment_input: bool = True  # TrainTransform (random crop, rotation) on training batches; False = EvalTransform
    labeled_fraction: Optional[float] = None  # class-stratified subset of the training split (semi-supervised)
    subset_seed: int = 0
    max_steps_per_epoch: Optional[int] = None
    eval_every: int = 1
    materialize: bool = False  # read the splits into the object store first (small datasets)
    num_workers: int = 1
    use_gpu: Literal["auto", "yes", "no"] = "auto"
    cpus_per_worker: float = 0.5
    output: str = ""
    checkpoint_every: int = 10
    keep_checkpoints: int = 2
    max_failures: int = 2
    seed: int = 0
    label: str = ""  # method name shown in reports (default: derived from the source)
    smoke_test: bool = False
    tracking: TrackingConfig = field(default_factory=TrackingConfig)  # MLflow (off by default; train/tracking.py)

    def _check_common(self) -> None:
        name = type(self).__name__
        for f in ("num_frames", "epochs", "batch_size", "eval_every", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, f) < 1:
                raise ConfigError(f"{name}.{f}: {getattr(self, f)!r} must be >= 1")
        if self.num_workers < 0:
            raise ConfigError(f"{name}.num_workers: {self.num_workers!r} must be >= 0 (0: in this process)")
        if self.num_workers and self.batch_size % self.num_workers:
            raise ConfigError(f"{name}.batch_size: {self.batch_size} (global) not divisible by "
                              f"num_workers={self.num_workers}")
        if self.labeled_fraction is not None and not 0.0 < self.labeled_fraction <= 1.0:
            raise ConfigError(f"{name}.labeled_fraction: {self.labeled_fraction!r} must be in (0, 1]")
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch < 1:
            raise ConfigError(f"{name}.max_steps_per_epoch: {self.max_steps_per_epoch!r} must be >= 1 or null")
        if not 0 < self.cpus_per_worker <= 64:
            raise ConfigError(f"{name}.cpus_per_worker: {self.cpus_per_worker!r} must be in (0, 64]")
        if self.feature == "raw":
            if self.checkpoint or self.random_init:
                raise ConfigError(f"{name}.feature: 'raw' probes coordinates; it takes neither checkpoint nor "
                                  "random_init")
        elif self.random_init:
            if self.checkpoint:
                raise ConfigError(f"{name}.random_init: true together with checkpoint {self.checkpoint!r}; "
                                  "choose one")
            if self.preset is None:
                raise ConfigError(f"{name}.random_init: true needs preset (paper/small/tiny)")
        elif not self.checkpoint and not self.allows_scratch():
            raise ConfigError(f"{name}.checkpoint: empty; give --checkpoint, or --random-init --preset P, or "
                              "--feature raw")
        if self.joint_map and not self.checkpoint:
            raise ConfigError(f"{name}.joint_map: only meaningful with a pretrained checkpoint (transfer)")

    def allows_scratch(self) -> bool:
        return False

    @property
    def source(self) -> str:
        if self.feature == "raw":
            return "raw"
        return "random" if self.random_init else "checkpoint"


@dataclass(frozen=True)
class LinearEvalConfig(EvalCommon):
    """Linear probe (METHOD.md): SGD lr 0.1, momentum 0.9, 100 epochs, cosine to 0."""

    lr: float = 0.1
    lr_scaling: Literal["linear", "none"] = "none"  # "linear": lr * batch_size / 256
    momentum: float = 0.9
    weight_decay: float = 0.0
    # Frozen features computed once and reused by every epoch: `cache_views` passes over the training split (each
    # with its own random crop and rotation when augment_input) and one over the test split. The head then trains
    # on in-memory features, each epoch drawing one cached view per sample: the 100-epoch protocol costs
    # `cache_views` encoder passes instead of 100. 0 = no cache (encode every batch of every epoch).
    cache_views: int = 4

    def __post_init__(self) -> None:
        self._check_common()
        if self.cache_views < 0:
            raise ConfigError(f"LinearEvalConfig.cache_views: {self.cache_views!r} must be >= 0")
        if not self.lr > 0:
            raise ConfigError(f"LinearEvalConfig.lr: {self.lr!r} must be > 0")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"LinearEvalConfig.momentum: {self.momentum!r} must be in [0, 1)")
        if self.weight_decay < 0:
            raise ConfigError(f"LinearEvalConfig.weight_decay: {self.weight_decay!r} must be >= 0")

    @property
    def effective_lr(self) -> float:
        return self.lr * self.batch_size / 256 if self.lr_scaling == "linear" else self.lr


@dataclass(frozen=True)
class FinetuneConfig(EvalCommon):
    """Fine-tuning (defaults: METHOD.md). ``seeds`` empty = the single run ``seed``."""

    lr: float = 3e-4
    min_lr: float = 1e-5
    warmup_epochs: float = 5.0
    weight_decay: float = 0.05
    layer_decay: float = 0.8
    drop_path: float = 0.3
    head_dropout: float = 0.3
    head: Literal["mlp", "bn_mlp"] = "mlp"  # bn_mlp: the released code's head (Linear 2048, BN, ReLU, Linear)
    head_hidden: int = 0  # 0: max(encoder width, 256) for mlp, 2048 for bn_mlp
    label_smoothing: float = 0.1
    seeds: tuple[int, ...] = ()
    # diffusion augmentation (built by macdiff_ray.augment.pool.build_augmenter)
    augment: bool = False
    t_start: int = 500
    aug_ratio: float = 0.5
    augment_actors: int = 1
    # GPU share each augmentation actor reserves (0..1); None: 0.25 where the cluster has or can launch GPUs, else 0.
    # On 1-GPU nodes whose trainer takes the whole GPU, 0.25 leaves the actors nowhere to go: set 0 (CPU actors) or
    # give the trainer a fraction.
    augment_gpu_share: Optional[float] = None
    aug_condition: str = "masked"  # decoder condition of the augmentation: "masked" or "full" (augment.core)
    # augmentation sources: "train" = cropped and rotated afresh per chunk like real batches; "eval" = one centre crop
    aug_source_transform: Literal["train", "eval"] = "train"

    def __post_init__(self) -> None:
        self._check_common()
        if self.augment_gpu_share is not None and not 0.0 <= self.augment_gpu_share <= 1.0:
            raise ConfigError(f"FinetuneConfig.augment_gpu_share: {self.augment_gpu_share!r} must be in [0, 1]")
        for f in ("lr", "min_lr"):
            if not getattr(self, f) > 0:
                raise ConfigError(f"FinetuneConfig.{f}: {getattr(self, f)!r} must be > 0")
        if self.warmup_epochs < 0 or self.weight_decay < 0:
            raise ConfigError("FinetuneConfig.warmup_epochs/weight_decay: must be >= 0")
        if not 0 < self.layer_decay <= 1:
            raise ConfigError(f"FinetuneConfig.layer_decay: {self.layer_decay!r} must be in (0, 1]")
        for f in ("drop_path", "head_dropout", "label_smoothing"):
            if not 0 <= getattr(self, f) < 1:
                raise ConfigError(f"FinetuneConfig.{f}: {getattr(self, f)!r} must be in [0, 1)")
        if self.head_hidden < 0:
            raise ConfigError(f"FinetuneConfig.head_hidden: {self.head_hidden!r} must be >= 0")
        if self.feature == "raw":
            raise ConfigError("FinetuneConfig.feature: 'raw' has no encoder to fine-tune; use pooled or per_joint")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"FinetuneConfig.seeds: repeated seed in {list(self.seeds)}")
        if self.augment:
            if not self.checkpoint:
                raise ConfigError("FinetuneConfig.augment: needs a pretrained checkpoint (its decoder generates)")
            from macdiff_ray.augment.core import check_aug_condition

            check_aug_condition(self.aug_condition, "FinetuneConfig.aug_condition (--aug-condition)")
            if not 0 < self.t_start < 1000 or self.aug_ratio < 0 or self.augment_actors < 1:
                raise ConfigError(f"FinetuneConfig: t_start {self.t_start} must be in (0, 1000), aug_ratio "
                                  f"{self.aug_ratio} >= 0, augment_actors {self.augment_actors} >= 1")

    def allows_scratch(self) -> bool:
        return False
