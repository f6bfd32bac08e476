"""Pretraining run configuration (one frozen dataclass, strict through :func:`macdiff_ray.config.from_dict`).

Derived values (effective learning rate, per-worker batch, steps per epoch, the resolved ``ModelConfig``) are
computed by functions here and logged; they are never written back into the config.

Learning rate and batch size: METHOD.md gives lr 1e-3 at a total batch of 128. ``lr`` is that base rate at
``lr_reference_batch`` (128); with ``lr_scaling="linear"`` (default) the rate used is
``lr * batch_size / lr_reference_batch`` (the linear scaling rule), so batch 128 gives exactly the paper's 1e-3 and
batch 32 gives 2.5e-4. ``lr_scaling="none"`` uses ``lr`` as given. ``min_lr`` is never scaled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from macdiff_ray.config import ConfigError, from_dict, to_dict
from macdiff_ray.diffusion import DiffusionConfig
from macdiff_ray.train.tracking import TrackingConfig

PRESETS = ("paper", "small", "tiny")


@dataclass(frozen=True)
class PretrainConfig:
    """Everything one pretraining run needs. ``batch_size`` is GLOBAL (summed over workers)."""

    # --- data ---
    data_dir: str = ""  # prepared dataset directory (manifest.json + shards/)
    benchmark: str = ""  # a name from macdiff_ray.data.benchmarks.BENCHMARKS; the train split is used
    num_frames: int = 120  # T0 after crop+resize
    persons: Literal["first", "all"] = "first"  # "first": actor 1 only (released code); "all": every valid person
    # --- model / diffusion ---
    preset: Literal["paper", "small", "tiny"] = "paper"
    # the objective: MacDiff or a baseline preset of the same code (macdiff_ray.model.config METHOD_PRESETS:
    # macdiff, ddim, mdm, mdm_orig, mae, mamp); applied over `preset`, under `model_overrides`
    method: Literal["macdiff", "ddim", "mdm", "mdm_orig", "mae", "mamp"] = "macdiff"
    model_overrides: dict[str, Any] = field(default_factory=dict)  # ModelConfig fields replacing the preset's
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    # --- optimisation (METHOD.md "Training") ---
    epochs: int = 400
    batch_size: int = 128
    lr: float = 1e-3
    lr_scaling: Literal["linear", "none"] = "linear"
    lr_reference_batch: int = 128
    min_lr: float = 1e-5
    warmup_epochs: float = 20.0
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: Optional[float] = None  # max global grad norm; None = no clipping (norm is still logged)
    amp: bool = True  # autocast on GPU (amp_dtype); the CPU follows cpu_precision
    amp_dtype: Literal["bfloat16", "float16"] = "bfloat16"  # float16 adds a GradScaler
    # CPU training precision: "bf16" = bfloat16 autocast of the forward pass (AVX512-BF16/AMX kernels; the weights,
    # optimiser and loss stay float32; attention runs in float32, model/layers.py); "auto" = bf16 on a CPU with native
    # bf16 kernels, fp32 otherwise. Measured interleaved on this project's AVX512-BF16 machine (README, issue 16, NW-UCLA
    # at 32 frames, 200 steps): bf16 1.70x fp32 for `paper`, 1.49x `small`, 1.34x `tiny`, loss curves 0.0-0.2% apart.
    cpu_precision: Literal["auto", "fp32", "bf16"] = "auto"
    # Steps between host reads of the per-step loss record (train.loop.train_epoch reads it once every log_every
    # steps and at the end of the epoch instead of syncing on every step; the NaN check runs at each read).
    log_every: int = 10
    # Where the training transforms run: "cpu" = Ray Data map_batches (numpy); "train" = Ray Data only decodes the
    # Parquet columns and the crop/resize, rotation, noise and normalisation run batched on the training device
    # (macdiff_ray.data.device_transforms), after iter_torch.
    transform_device: Literal["cpu", "train"] = "cpu"
    compile: bool = False  # torch.compile the Transformer blocks (sets ModelConfig.use_compile)
    max_steps_per_epoch: Optional[int] = None  # cap on optimiser steps per epoch (smoke tests, benchmarks)
    validate_every: int = 0  # epochs between validation-loss passes on the test split; 0 = never
    # Wall-clock budget of the training loop in minutes (None = none). After warmup the lr follows a half cosine
    # over the time left (train.optim.BudgetCosine), and the run stops after the last epoch that its recent epoch
    # times say ends inside the budget (at most `epochs`); the clock is stored in checkpoints, so a resumed run
    # keeps the same budget.
    budget_minutes: Optional[float] = None
    val_max_batches: int = 8
    # --- scale / placement ---
    num_workers: int = 1
    use_gpu: Literal["auto", "yes", "no"] = "auto"
    cpus_per_worker: float = 0.5  # fractional so Ray Data read tasks are never starved (RAY-NOTES hang 1)
    # --- checkpoints / output ---
    output: str = ""  # RUN_DIR (local path) or a URI such as s3://bucket/run
    # epochs; a checkpoint is also written after the last epoch. 1: a preempted spot node loses at most the
    # epoch in flight (checkpoints are small next to an epoch: keep_checkpoints bounds the storage)
    checkpoint_every: int = 1
    keep_checkpoints: int = 3  # newest N kept (Ray CheckpointConfig.num_to_keep)
    max_failures: int = 2  # worker-group restarts from the newest checkpoint (Ray FailureConfig)
    seed: int = 0
    smoke_test: bool = False
    tracking: TrackingConfig = field(default_factory=TrackingConfig)  # MLflow (off by default; train/tracking.py)
    # --- TEST-ONLY fault injection: never set in real runs ---
    fail_at_epoch: Optional[int] = None  # test-only: rank `fail_rank` calls os._exit(1) at the start of this epoch
    fail_rank: int = 1  # test-only
    fail_once_marker: Optional[str] = None  # test-only: created before dying; if it exists, no failure

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"PretrainConfig.{name}: {getattr(self, name)!r} {why}")

        for name in ("epochs", "batch_size", "num_frames", "num_workers", "lr_reference_batch",
                     "checkpoint_every", "keep_checkpoints", "val_max_batches", "log_every"):
            if getattr(self, name) < 1:
                raise bad(name, "must be >= 1")
        for name in ("lr", "min_lr"):
            if not getattr(self, name) > 0:
                raise bad(name, "must be > 0")
        if self.min_lr > self.effective_lr:
            raise ConfigError(
                f"PretrainConfig.min_lr: {self.min_lr} is above the effective lr {self.effective_lr}"
            )
        if self.warmup_epochs < 0:
            raise bad("warmup_epochs", "must be >= 0")
        if self.weight_decay < 0:
            raise bad("weight_decay", "must be >= 0")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise bad("betas", "must be two numbers in [0, 1)")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise bad("grad_clip", "must be > 0 or null")
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch < 1:
            raise bad("max_steps_per_epoch", "must be >= 1 or null")
        if self.validate_every < 0:
            raise bad("validate_every", "must be >= 0")
        if self.budget_minutes is not None and not self.budget_minutes > 0:
            raise bad("budget_minutes", "must be > 0 or null")
        if self.batch_size % self.num_workers != 0:
            raise ConfigError(
                f"PretrainConfig.batch_size: {self.batch_size} (global) is not divisible by "
                f"num_workers={self.num_workers}"
            )
        if not 0 < self.cpus_per_worker <= 64:
            raise bad("cpus_per_worker", "must be in (0, 64]")
        if self.max_failures < 0:
            raise bad("max_failures", "must be >= 0")
        if self.fail_at_epoch is not None and self.fail_once_marker is None:
            raise ConfigError(
                "PretrainConfig.fail_at_epoch is set but fail_once_marker is not: the test-only fault would "
                "fire again after every restart"
            )
        bad_keys = set(self.model_overrides) & {"num_joints", "num_frames", "use_compile"}
        if bad_keys:
            raise ConfigError(
                f"PretrainConfig.model_overrides: {sorted(bad_keys)} are set from the dataset manifest, "
                "`num_frames` and `compile`; do not override them"
            )

    # ---- derived values (never stored back into the config) ----
    @property
    def effective_lr(self) -> float:
        """Peak learning rate after the batch-size rule (see module docstring)."""
        if self.lr_scaling == "linear":
            return self.lr * self.batch_size / self.lr_reference_batch
        return self.lr

    @property
    def per_worker_batch(self) -> int:
        return self.batch_size // self.num_workers

    @property
    def is_uri(self) -> bool:
        return "://" in self.output


def steps_per_epoch(cfg: PretrainConfig, num_train_samples: int) -> int:
    """Optimiser steps per epoch: whole global batches of the train split (drop_last), capped by the config."""
    persons = 1  # with persons="all" the sample count still drives the step count (one row = one sequence)
    steps = (num_train_samples * persons) // cfg.batch_size
    if steps < 1:
        raise ConfigError(
            f"PretrainConfig.batch_size: {cfg.batch_size} exceeds the {num_train_samples} training samples of "
            f"{cfg.benchmark!r}; not one full batch per epoch"
        )
    if cfg.max_steps_per_epoch is not None:
        steps = min(steps, cfg.max_steps_per_epoch)
    return steps


def resolve_model_config(cfg: PretrainConfig, num_joints: int):
    """The ModelConfig of this run: the size preset for the dataset's joints/frames, then the method preset's
    settings (``method_overrides(cfg.method)``), then ``model_overrides``."""
    from macdiff_ray.model import ModelConfig, method_overrides, model_preset

    base = to_dict(model_preset(cfg.preset, num_joints=num_joints, num_frames=cfg.num_frames))
    unknown = sorted(set(cfg.model_overrides) - set(base))
    if unknown:
        raise ConfigError(
            f"PretrainConfig.model_overrides: unknown ModelConfig key(s) {unknown}; valid keys are {sorted(base)}"
        )
    if "method" in cfg.model_overrides:
        raise ConfigError("PretrainConfig.model_overrides: 'method' is chosen by PretrainConfig.method (--method), "
                          "which also sets the method's other settings")
    base.update(method_overrides(cfg.method))
    base.update(cfg.model_overrides)
    if "use_compile" in base:  # compilation is a run setting (PretrainConfig.compile), not part of the weights
        base["use_compile"] = cfg.compile
    return from_dict(ModelConfig, base, _path="model_overrides")


def smoke_overrides() -> dict:
    """What ``--smoke-test`` changes: a tiny, short run (seconds of training)."""
    return {
        "preset": "tiny",
        "epochs": 2,
        "batch_size": 16,
        "max_steps_per_epoch": 3,
        "warmup_epochs": 1.0,
        "checkpoint_every": 1,
        "num_frames": 32,
        "smoke_test": True,
    }


# Keys that may differ between a run and its resumption (everything else must match the saved config.json).
RESUMABLE_CHANGES = frozenset(
    {
        "epochs", "num_workers", "use_gpu", "cpus_per_worker", "checkpoint_every", "keep_checkpoints",
        "max_failures", "max_steps_per_epoch", "validate_every", "budget_minutes", "val_max_batches", "data_dir", "output",
        "compile", "smoke_test", "fail_at_epoch", "fail_rank", "fail_once_marker", "tracking",
        # speed settings: same model, same data distribution
        "cpu_precision", "log_every", "transform_device",
    }
)
