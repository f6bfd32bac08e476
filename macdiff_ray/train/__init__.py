"""Ray Train pretraining: config, optimiser/schedule, epoch loop, checkpoints, logging, driver.

Public API: :class:`PretrainConfig`, :func:`run_pretrain`, :func:`train_func`, :func:`build_trainer`,
:func:`train_epoch`, :func:`validate`, and the checkpoint helpers :func:`load_checkpoint`,
:func:`resolve_checkpoint`, :func:`find_latest_checkpoint`, :func:`check_compatible`.
"""

from macdiff_ray.train.checkpoint import (
    CheckpointNotFoundError,
    IncompatibleCheckpointError,
    build_state,
    check_compatible,
    code_version,
    find_latest_checkpoint,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
    unwrap_model,
)
from macdiff_ray.train.config import PretrainConfig, resolve_model_config, smoke_overrides, steps_per_epoch
from macdiff_ray.train.loop import DiffusionLoss, NonFiniteLossError, train_epoch, validate
from macdiff_ray.train.optim import WarmupCosine, build_optimizer, param_groups
from macdiff_ray.train.pretrain import build_trainer, describe_data, run_pretrain, train_func

__all__ = [
    "PretrainConfig", "resolve_model_config", "smoke_overrides", "steps_per_epoch",
    "run_pretrain", "train_func", "build_trainer", "describe_data",
    "train_epoch", "validate", "DiffusionLoss", "NonFiniteLossError",
    "WarmupCosine", "build_optimizer", "param_groups",
    "build_state", "save_checkpoint", "load_checkpoint", "resolve_checkpoint", "find_latest_checkpoint",
    "check_compatible", "code_version", "unwrap_model", "CheckpointNotFoundError", "IncompatibleCheckpointError",
]
