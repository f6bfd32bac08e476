"""Pretraining in this process: the same :func:`macdiff_ray.train.pretrain.train_func`, run without Ray Train.

For small datasets on one machine (and the many short runs of ``experiments/paper.py``), where a Ray Train worker
group costs more than the run: the training split is held in memory (``make_memory_dataset``, the same
transforms), and ``train_func`` runs through the hooks interface that Tune trials use
(``pretrain.set_trial_hooks``): the device, the datasets, the checkpoint to resume from and the reporting come from
:class:`LocalHooks`. Checkpoints land where Ray Train puts them (``RUN_DIR/checkpoints/epoch_XXXXX/``, newest
``keep_checkpoints`` kept) and ``results.json`` carries the keys of :func:`pretrain.run_pretrain`'s that the
project reads (``config``, ``model_config``, ``final_epoch``, ``final_loss``, ``history``, ``checkpoint``, ...).
Re-running the same command resumes from the newest checkpoint; a finished run trains nothing. Local paths only.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Optional

import torch

from macdiff_ray.config import ConfigError, absolute_paths, to_dict
from macdiff_ray.train import checkpoint as ckpt_lib
from macdiff_ray.train import pretrain as pt
from macdiff_ray.train.config import PretrainConfig, resolve_model_config, steps_per_epoch
from macdiff_ray.train.logging import join, read_json, write_json

__all__ = ["LocalHooks", "run_pretrain_local"]


class LocalHooks:
    """``train_func``'s hooks for a run in this process (see :func:`pretrain.set_trial_hooks`)."""

    def __init__(self, cfg: PretrainConfig, device: torch.device):
        from macdiff_ray.data.pipeline import make_memory_dataset

        self.cfg, self._device = cfg, device
        self.datasets = {"train": make_memory_dataset(cfg.data_dir, cfg.benchmark, "train", train=True,
                                                      num_frames=cfg.num_frames, seed=cfg.seed,
                                                      persons=cfg.persons)}
        if cfg.validate_every:
            self.datasets["val"] = make_memory_dataset(cfg.data_dir, cfg.benchmark, "test", train=False,
                                                       num_frames=cfg.num_frames, persons=cfg.persons)
        self.root = Path(cfg.output) / ckpt_lib.CHECKPOINTS_SUBDIR

    def device(self) -> torch.device:
        return self._device

    def get_dataset_shard(self, name: str) -> Any:
        return self.datasets[name]

    def get_checkpoint(self) -> Optional[Any]:
        import ray.train

        latest = ckpt_lib.find_latest_checkpoint(self.cfg.output)
        return ray.train.Checkpoint.from_directory(str(latest)) if latest is not None else None

    def epoch_metrics(self, net: Any, epoch: int, device: Any) -> dict:
        return {}

    def report(self, metrics: dict, checkpoint_dir: Optional[str], checkpoint_name: Optional[str]) -> None:
        if not checkpoint_dir:
            return
        dest = self.root / checkpoint_name
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(checkpoint_dir, tmp)
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
        kept = sorted(p for p in self.root.iterdir() if p.is_dir() and p.name.startswith("epoch_")
                      and not p.name.endswith(".tmp"))
        for old in kept[:-self.cfg.keep_checkpoints]:
            shutil.rmtree(old)


def run_pretrain_local(cfg: PretrainConfig) -> dict:
    """Run (or resume) one pretraining run in this process; returns the ``results.json`` dict."""
    if not cfg.output:
        raise ConfigError("PretrainConfig.output: empty; give a run directory (--output)")
    if "://" in cfg.output or "://" in cfg.data_dir:
        raise ConfigError("in-process pretraining reads and writes local paths only; use run_pretrain for URIs")
    if cfg.num_workers != 1:
        raise ConfigError(f"PretrainConfig.num_workers: {cfg.num_workers}; a run in this process has one worker")
    cfg = absolute_paths(cfg, "data_dir", "output")
    t0 = time.perf_counter()
    info = pt.describe_data(cfg)
    model_cfg = resolve_model_config(cfg, info["num_joints"])
    steps_per_epoch(cfg, info["num_train"])
    pt.check_resume(cfg, info, model_cfg)
    write_json(join(cfg.output, "config.json"), to_dict(cfg))
    done = read_json(join(cfg.output, "results.json"))
    latest = ckpt_lib.find_latest_checkpoint(cfg.output)
    if done is not None and latest is not None and done.get("final_epoch") in (
            cfg.epochs, ckpt_lib.load_checkpoint(latest)["epoch"]) and (done.get("final_epoch") == cfg.epochs
                                                                       or cfg.budget_minutes is not None):
        return done  # finished before (all epochs, or its budget): nothing to train
    use_cuda = cfg.use_gpu == "yes" or (cfg.use_gpu == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if use_cuda else "cpu")
    hooks = LocalHooks(cfg, device)
    pt.set_trial_hooks(hooks)
    try:
        summary = pt.train_func(to_dict(cfg))
    finally:
        pt.set_trial_hooks(None)
    history = summary.get("history", [])
    final = summary.get("final_metrics", {})
    rates = [h["samples_per_s"] for h in history]
    latest = ckpt_lib.find_latest_checkpoint(cfg.output)
    results = {
        "config": to_dict(cfg),
        "model_config": to_dict(model_cfg),
        "data": {k: info[k] for k in ("dataset", "benchmark", "num_classes", "num_train")},
        "code_version": ckpt_lib.code_version(),
        "wall_time_s": time.perf_counter() - t0,
        "final_loss": final.get("loss"),
        "final_epoch": final.get("epoch"),
        "samples_per_s_mean": sum(rates[1:]) / len(rates[1:]) if len(rates) > 1 else (rates[0] if rates else None),
        "steps_per_epoch": summary.get("steps_per_epoch"),
        "device": device.type,
        "runner": "in-process (train.local)",
        "start_epoch": summary.get("start_epoch"),
        "attempts": summary.get("attempts", []),
        "budget": summary.get("budget"),
        "checkpoint": str(latest) if latest is not None else None,
        "history": history,
    }
    write_json(join(cfg.output, "results.json"), results)
    return results
