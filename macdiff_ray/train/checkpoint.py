"""Self-describing pretraining checkpoints (contract: docs/ARCHITECTURE.md "Checkpoints").

A checkpoint is a directory holding ``checkpoint.pt`` and ``meta.json``. ``checkpoint.pt`` is a ``torch.save`` of
a dict of tensors and plain containers only, so it loads with ``torch.load(weights_only=True)``:

=================  ==========================================================================================
``model``          state_dict of the unwrapped model (no ``module.`` / ``_orig_mod.`` prefixes)
``optimizer``      optimizer state_dict
``scaler``         GradScaler state_dict or None
``epoch``          number of COMPLETED epochs (a resumed run starts at epoch index ``epoch``)
``step``           optimiser steps taken so far
``config``         the run config as a plain dict (``to_dict(PretrainConfig)``)
``model_config``   ``to_dict(ModelConfig)``
``data``           ``{dataset, benchmark, layout (JointLayout.to_dict()), stats ({mean, std}), num_classes}``
``code_version``   ``git describe`` of the repo, else the package version
=================  ==========================================================================================

A run directory keeps its checkpoints under ``RUN_DIR/checkpoints/<name>/`` (Ray Train storage).
Paths may also be URIs that pyarrow understands (``s3://...``, ``file://...``); those are copied to a local cache.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from torch import nn

CHECKPOINT_FILE = "checkpoint.pt"
META_FILE = "meta.json"
CHECKPOINTS_SUBDIR = "checkpoints"
REQUIRED_KEYS = ("model", "optimizer", "scaler", "epoch", "step", "config", "model_config", "data", "code_version")
DATA_KEYS = ("dataset", "benchmark", "layout", "stats", "num_classes")
# ModelConfig keys that change how a model runs, not its weights or objective: never a reason to refuse.
RUNTIME_MODEL_KEYS = frozenset({"use_compile"})
# Keys that shape the weights (what `architecture_only=True` compares: probes/fine-tuning may change the rest).
ARCHITECTURE_MODEL_KEYS = frozenset({"num_frames", "patch_len", "num_joints", "channels", "width", "enc_depth",
                                     "enc_heads", "dec_width", "dec_depth", "dec_heads", "mlp_ratio",
                                     "time_embed_dim", "method", "dec_tokens"})
# ModelConfig keys added after checkpoints were first written, with the value every older checkpoint had: a
# checkpoint without one of them is read as having that value (MacDiff with random masking).
LEGACY_MODEL_DEFAULTS = {"masking": "random", "motion_temperature": 0.75, "method": "macdiff", "dec_tokens": "joint"}


def checkpoint_model_config(ckpt: Mapping[str, Any]) -> dict:
    """The checkpoint's ``model_config`` dict with :data:`LEGACY_MODEL_DEFAULTS` filled in where it predates them."""
    return {**LEGACY_MODEL_DEFAULTS, **dict(ckpt.get("model_config") or {})}


def checkpoint_method(ckpt: Mapping[str, Any]) -> str:
    """The pretraining method that made the checkpoint (``macdiff``, ``ddim``, ``mdm``, ``mae``, ``mamp``)."""
    return str(checkpoint_model_config(ckpt)["method"])


class CheckpointNotFoundError(FileNotFoundError):
    """No checkpoint at the given path / in the given run directory."""


class IncompatibleCheckpointError(ValueError):
    """The checkpoint was made for another model config, joint layout or dataset."""


# --------------------------------------------------------------------------------------------------------------
# Code version
# --------------------------------------------------------------------------------------------------------------
def code_version() -> str:
    """``git describe --always --dirty`` of the repository holding this package, else ``macdiff-ray <version>``."""
    from macdiff_ray import __version__

    repo = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "describe", "--always", "--dirty", "--tags"],
            capture_output=True, text=True, timeout=5, check=True,
        )
        described = out.stdout.strip()
        if described:
            return f"macdiff-ray {__version__} ({described})"
    except (OSError, subprocess.SubprocessError):
        pass
    return f"macdiff-ray {__version__}"


# --------------------------------------------------------------------------------------------------------------
# Building and saving
# --------------------------------------------------------------------------------------------------------------
def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip DDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def _plain(obj: Any) -> Any:
    """Dataclasses, tuples and paths -> JSON-like containers that ``weights_only`` loading accepts."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        from macdiff_ray.config import to_dict

        return to_dict(obj)
    if hasattr(obj, "to_dict") and callable(obj.to_dict) and not isinstance(obj, (dict, torch.Tensor)):
        return _plain(obj.to_dict())
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "tolist") and not isinstance(obj, torch.Tensor):  # numpy arrays / scalars
        return obj.tolist()
    return obj


def build_state(
    model: nn.Module,
    optimizer: Optional[torch.optim.Optimizer],
    scaler: Optional[Any],
    *,
    epoch: int,
    step: int,
    config: Any,
    model_config: Any,
    data: Mapping[str, Any],
    version: Optional[str] = None,
) -> dict:
    """The checkpoint dict (see module docstring). ``model`` may be DDP/compile-wrapped."""
    missing = [k for k in DATA_KEYS if k not in data]
    if missing:
        raise ValueError(f"build_state: data is missing {missing}; needs {list(DATA_KEYS)}")
    return {
        "model": {k: v.detach().cpu() for k, v in unwrap_model(model).state_dict().items()},
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": int(epoch),
        "step": int(step),
        "config": _plain(config),
        "model_config": _plain(model_config),
        "data": _plain(dict(data)),
        "code_version": version if version is not None else code_version(),
    }


def save_checkpoint(state: Mapping[str, Any], directory: str | os.PathLike) -> Path:
    """Write ``checkpoint.pt`` (atomically) and ``meta.json`` into ``directory``; returns the directory."""
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise ValueError(f"save_checkpoint: state is missing {missing}")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / (CHECKPOINT_FILE + ".tmp")
    torch.save(dict(state), tmp)
    os.replace(tmp, d / CHECKPOINT_FILE)
    cfg = state["config"] if isinstance(state["config"], Mapping) else {}
    meta = {
        "epoch": state["epoch"],
        "step": state["step"],
        "preset": cfg.get("preset"),
        "dataset": state["data"].get("dataset"),
        "benchmark": state["data"].get("benchmark"),
        "layout": (state["data"].get("layout") or {}).get("name"),
        "method": (state["model_config"] or {}).get("method", "macdiff") if isinstance(state["model_config"], Mapping)
        else None,
        "code_version": state["code_version"],
    }
    (d / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return d


# --------------------------------------------------------------------------------------------------------------
# Finding and loading
# --------------------------------------------------------------------------------------------------------------
def _is_uri(path: str | os.PathLike) -> bool:
    return "://" in os.fspath(path)


def _order_key(ckpt_dir: Path) -> tuple:
    """Newest = highest (epoch, step) from meta.json; directory name breaks ties."""
    try:
        meta = json.loads((ckpt_dir / META_FILE).read_text())
        return (int(meta.get("epoch", -1)), int(meta.get("step", -1)), ckpt_dir.name)
    except (OSError, ValueError):
        return (-1, -1, ckpt_dir.name)


# Ray Train V2 (2.60) records its committed checkpoints in this file of the run's storage folder
# (ray/train/v2/_internal/constants.py CHECKPOINT_MANAGER_SNAPSHOT_FILENAME); "latest_checkpoint_result" is the one
# a restart resumes from.
RAY_SNAPSHOT_FILE = "checkpoint_manager_snapshot.json"


def committed_checkpoint_name(checkpoints_dir: str | os.PathLike) -> Optional[str]:
    """The folder name of the checkpoint Ray Train committed last in ``checkpoints_dir`` (local or URI), from its
    ``checkpoint_manager_snapshot.json``; None without a readable snapshot or a committed checkpoint."""
    from macdiff_ray import storage

    try:
        snap = json.loads(storage.read_bytes(storage.join(checkpoints_dir, RAY_SNAPSHOT_FILE)).decode())
    except (FileNotFoundError, OSError, ValueError):
        return None
    latest = snap.get("latest_checkpoint_result") if isinstance(snap, dict) else None
    name = latest.get("checkpoint_dir_name") if isinstance(latest, dict) else None
    return name if isinstance(name, str) and name else None


def find_latest_checkpoint(run_dir: str | os.PathLike) -> Optional[Path]:
    """Directory of the checkpoint to continue from in a local run (``RUN_DIR/checkpoints/*/checkpoint.pt``), or
    None. ``run_dir`` may also be the ``checkpoints`` folder itself.

    The one Ray Train committed (its snapshot file) wins: a higher epoch folder on disk can be a checkpoint a
    failed attempt wrote but Ray never committed. Without a snapshot (checkpoints not written by Ray Train), the
    highest (epoch, step) in ``meta.json``.
    """
    root = Path(run_dir)
    base = root / CHECKPOINTS_SUBDIR if (root / CHECKPOINTS_SUBDIR).is_dir() else root
    if not base.is_dir():
        return None
    committed = committed_checkpoint_name(base)
    if committed is not None and (base / committed / CHECKPOINT_FILE).is_file():
        return base / committed
    candidates = [p for p in base.iterdir() if p.is_dir() and (p / CHECKPOINT_FILE).is_file()]
    if not candidates:
        return None
    return max(candidates, key=_order_key)


def _download_uri(uri: str) -> Path:
    """Copy a checkpoint directory or a run directory at a pyarrow-filesystem URI into a local temp dir."""
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(uri)
    root = root.rstrip("/")
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise CheckpointNotFoundError(f"no checkpoint at {uri}")
    local = Path(tempfile.mkdtemp(prefix="macdiff_ckpt_"))
    if info.type == pafs.FileType.File:  # a .pt file
        pafs.copy_files(root, str(local / CHECKPOINT_FILE), source_filesystem=fs,
                        destination_filesystem=pafs.LocalFileSystem())
        return local
    if fs.get_file_info(f"{root}/{CHECKPOINT_FILE}").type == pafs.FileType.File:
        src = root
    else:  # a run dir: pick the newest by meta.json
        base = f"{root}/{CHECKPOINTS_SUBDIR}"
        if fs.get_file_info(base).type != pafs.FileType.Directory:
            base = root
        base_uri = uri.rstrip("/") + base[len(root):]
        committed = committed_checkpoint_name(base_uri)  # Ray's committed checkpoint first (find_latest_checkpoint)
        best, best_key = None, None
        if committed is not None and fs.get_file_info(f"{base}/{committed}/{CHECKPOINT_FILE}").type == \
                pafs.FileType.File:
            best, best_key = f"{base}/{committed}", (float("inf"),)
        for entry in fs.get_file_info(pafs.FileSelector(base, recursive=False)):
            if entry.type != pafs.FileType.Directory:
                continue
            if fs.get_file_info(f"{entry.path}/{CHECKPOINT_FILE}").type != pafs.FileType.File:
                continue
            try:
                with fs.open_input_stream(f"{entry.path}/{META_FILE}") as f:
                    meta = json.loads(f.read().decode())
                key = (int(meta.get("epoch", -1)), int(meta.get("step", -1)), entry.base_name)
            except (OSError, ValueError):
                key = (-1, -1, entry.base_name)
            if best_key is None or (best_key[0] != float("inf") and key > best_key):
                best, best_key = entry.path, key
        if best is None:
            raise CheckpointNotFoundError(f"no checkpoint under {uri} (looked in {base}/*/{CHECKPOINT_FILE})")
        src = best
    pafs.copy_files(src, str(local), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    return local


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """The local ``checkpoint.pt`` file for a checkpoint dir, a ``.pt`` file, a run dir or a URI of one of these.

    Raises :class:`CheckpointNotFoundError` naming the path when there is none.
    """
    if _is_uri(path):
        return resolve_checkpoint(_download_uri(os.fspath(path)))
    p = Path(path)
    if p.is_file():
        return p
    if not p.exists():
        raise CheckpointNotFoundError(f"checkpoint path does not exist: {p}")
    if (p / CHECKPOINT_FILE).is_file():
        return p / CHECKPOINT_FILE
    latest = find_latest_checkpoint(p)
    if latest is None:
        raise CheckpointNotFoundError(
            f"no checkpoint in {p}: expected {p / CHECKPOINT_FILE} or {p / CHECKPOINTS_SUBDIR}/*/{CHECKPOINT_FILE}"
        )
    return latest / CHECKPOINT_FILE


def load_checkpoint(path_or_run_dir: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint dict with ``weights_only=True`` (see :func:`resolve_checkpoint` for accepted paths)."""
    file = resolve_checkpoint(path_or_run_dir)
    try:
        state = torch.load(file, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's own text advises weights_only=False (arbitrary code execution): keep only its diagnosis.
        why = str(e).split("WeightsUnpickler error:", 1)[-1].split(". Please use", 1)[0].strip()
        raise ValueError(f"checkpoint {file}: holds objects other than tensors and plain containers ({why}), "
                         "which the weights_only=True loader refuses; it was not written by macdiff-ray") from None
    except Exception as e:  # noqa: BLE001 - re-raised with the file named
        raise ValueError(f"could not load checkpoint {file} with weights_only=True: {type(e).__name__}: {e} "
                         "(a truncated or non-checkpoint file?)") from e
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {file}: expected a dict, got {type(state).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise ValueError(f"checkpoint {file}: missing key(s) {missing}; not a macdiff-ray pretraining checkpoint")
    return state


# --------------------------------------------------------------------------------------------------------------
# Compatibility
# --------------------------------------------------------------------------------------------------------------
def _layout_dict(layout: Any) -> Optional[dict]:
    if layout is None:
        return None
    if isinstance(layout, str):
        return {"name": layout}
    return _plain(layout)


def check_compatible(
    ckpt: Mapping[str, Any],
    model_config: Any,
    layout: Any,
    *,
    dataset: Optional[str] = None,
    benchmark: Optional[str] = None,
    architecture_only: bool = False,
) -> None:
    """Raise :class:`IncompatibleCheckpointError` unless ``ckpt`` fits this model config and joint layout.

    ``model_config``: a ModelConfig or its dict (None skips the check). ``layout``: a JointLayout, its dict, or a
    layout name (None skips). ``dataset`` / ``benchmark``: when given, they must equal the checkpoint's (resume
    needs them; transfer to another dataset passes None). ``architecture_only``: compare only the keys that
    shape the weights (``ARCHITECTURE_MODEL_KEYS``), for probes/fine-tuning that change e.g. ``drop_path``;
    resume compares every key but ``RUNTIME_MODEL_KEYS``.
    """
    problems = []
    if model_config is not None:
        want, have = _plain(model_config), checkpoint_model_config(ckpt)
        keys = (set(want) | set(have)) - RUNTIME_MODEL_KEYS
        if architecture_only:
            keys &= ARCHITECTURE_MODEL_KEYS
        diffs = sorted(k for k in keys if want.get(k, "<absent>") != have.get(k, "<absent>"))
        if diffs:
            detail = ", ".join(f"{k}: checkpoint {have.get(k, '<absent>')!r} vs run {want.get(k, '<absent>')!r}"
                               for k in diffs)
            preset = (ckpt.get("config") or {}).get("preset")
            problems.append(f"model config differs (checkpoint preset {preset!r}) in {detail}")
    data = ckpt.get("data") or {}
    if layout is not None:
        want_l, have_l = _layout_dict(layout), data.get("layout") or {}
        keys = [k for k in ("name", "joint_names", "parents") if k in want_l and k in have_l]
        diffs = [k for k in keys if want_l[k] != have_l[k]]
        if "name" not in have_l:
            problems.append("checkpoint records no joint layout")
        elif diffs:
            problems.append(
                f"joint layout differs: checkpoint {have_l.get('name')!r} "
                f"({len(have_l.get('joint_names', []))} joints) vs run {want_l.get('name')!r}"
                f"{' (' + str(len(want_l['joint_names'])) + ' joints)' if 'joint_names' in want_l else ''}"
            )
    if dataset is not None and data.get("dataset") != dataset:
        problems.append(f"dataset differs: checkpoint {data.get('dataset')!r} vs run {dataset!r}")
    if benchmark is not None and data.get("benchmark") != benchmark:
        problems.append(f"benchmark differs: checkpoint {data.get('benchmark')!r} vs run {benchmark!r}")
    if problems:
        raise IncompatibleCheckpointError(
            f"checkpoint (epoch {ckpt.get('epoch')}, {ckpt.get('code_version')}) does not fit this run: "
            + "; ".join(problems)
        )
