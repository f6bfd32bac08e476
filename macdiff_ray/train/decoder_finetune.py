"""Decoder fine-tuning (paper Sec. 4.4): "the MacDiff decoder is fine-tuned for another 100 epochs with the encoder
fixed and only global representations". Table 5 (reconstruction) uses the result; Table 6's "+ fine-tune" row
samples from it.

One step (:class:`GlobalConditionLoss`), tensors (N, T, V, C):
1. the frozen encoder (eval mode, no gradient) encodes the encoder view: ``encoder_view="masked"`` (default) a
   pretraining mask of it (the checkpoint's masking strategy and ratio), ``"full"`` every token;
2. the condition is z_global alone, the mean of those outputs, broadcast to every token (compact form: one row,
   index 0 everywhere); condition dropout as in pretraining (``cond_drop_prob``), so the decoder still samples
   unconditionally;
3. the clean sequence is diffused to a uniform t and the decoder's eps (or x0) error is averaged over ALL tokens (no
   token is special under a global condition).

Only the decoder's parameters are in the optimiser (AdamW, the pretraining weight-decay groups, warmup then cosine):
the encoder's weights stay bit for bit those of the pretraining checkpoint, which the run checks before writing
each checkpoint.

The loop is the framework-free :func:`macdiff_ray.train.loop.train_epoch` in this process over the training split
held in memory (:func:`macdiff_ray.data.pipeline.make_memory_dataset`, the METHOD.md training transforms), on
the GPU when there is one; no Ray. Checkpoints go to ``OUTPUT/checkpoints/epoch_XXXXX/`` (the format of
:mod:`macdiff_ray.train.checkpoint`, the pretraining run's ``config`` and ``data``, plus a ``decoder_finetune``
section: condition ``global``, ``encoder_view``, source checkpoint, encoder digest); re-running the same command
resumes from the newest one. ``generate.py reconstruct`` / ``sample`` take such a checkpoint, and ``reconstruct``
then uses the paper's protocol by default (global condition, RePaint-style inpainting).
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Optional

import numpy as np
import torch
from torch import nn

from macdiff_ray import console, storage
from macdiff_ray.config import ConfigError, absolute_paths, from_dict, to_dict
from macdiff_ray.diffusion.schedules import SCHEDULES
from macdiff_ray.train import checkpoint as ckpt_lib
from macdiff_ray.train.logging import join, log, read_json, write_json

ENCODER_VIEWS = ("masked", "full")
# Keys of a re-run that may differ from the saved config.json (everything else must match to resume).
RESUMABLE = frozenset({"epochs", "output", "data_dir", "checkpoint", "device", "num_threads", "smoke_test",
                       "max_steps_per_epoch", "keep_checkpoints"})


@dataclass(frozen=True)
class DecoderFinetuneConfig:
    """Decoder fine-tuning run. ``batch_size`` and ``lr`` are not given by the paper: chosen, not tuned (half the
    pretraining peak rate at this batch)."""

    checkpoint: str = ""  # the pretraining checkpoint (dir, .pt, run dir or URI): a MacDiff (method macdiff)
    data_dir: str = ""  # the prepared dataset it was pretrained on
    benchmark: str = ""  # default: the checkpoint's
    output: str = ""  # run directory (local or URI)
    epochs: int = 100  # paper: "another 100 epochs"
    batch_size: int = 64
    lr: float = 2.5e-4
    min_lr: float = 1e-5
    warmup_epochs: float = 1.0
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    encoder_view: Literal["masked", "full"] = "masked"
    # The noise schedule the decoder is fine-tuned (and then samples) on; None = the pretraining checkpoint's. The
    # paper's inverse-cosine (tau 1) keeps alpha_bar 0.998 at t = 0, a noise floor of about 45 mm on NW-UCLA;
    # cosine's is 0.99996 (what a reconstruction at the data's precision may want).
    schedule: Optional[Literal["tau", "cosine", "linear"]] = None
    persons: Literal["first", "all"] = "first"
    max_steps_per_epoch: Optional[int] = None
    checkpoint_every: int = 1
    keep_checkpoints: int = 2
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: int = 0  # torch CPU threads; 0 = torch's default
    seed: int = 0
    smoke_test: bool = False

    def __post_init__(self) -> None:
        for f in ("checkpoint", "data_dir", "output"):
            if not getattr(self, f):
                raise ConfigError(f"DecoderFinetuneConfig.{f}: empty; give --{f.replace('_dir', '')}")
        for f in ("epochs", "batch_size", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, f) < 1:
                raise ConfigError(f"DecoderFinetuneConfig.{f}: {getattr(self, f)!r} must be >= 1")
        if not self.lr > 0 or not 0 < self.min_lr <= self.lr:
            raise ConfigError(f"DecoderFinetuneConfig.lr/min_lr: need 0 < min_lr <= lr, got {self.min_lr}, {self.lr}")
        if self.warmup_epochs < 0 or self.weight_decay < 0:
            raise ConfigError("DecoderFinetuneConfig.warmup_epochs/weight_decay: must be >= 0")
        if self.encoder_view not in ENCODER_VIEWS:
            raise ConfigError(f"DecoderFinetuneConfig.encoder_view: {self.encoder_view!r} is not one of "
                              f"{list(ENCODER_VIEWS)}")
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch < 1:
            raise ConfigError("DecoderFinetuneConfig.max_steps_per_epoch: must be >= 1 or null")
        if self.num_threads < 0:
            raise ConfigError("DecoderFinetuneConfig.num_threads: must be >= 0")
        if self.schedule is not None and self.schedule not in SCHEDULES:
            raise ConfigError(f"DecoderFinetuneConfig.schedule (--schedule): {self.schedule!r} is not one of "
                              f"{list(SCHEDULES)} (or null: the checkpoint's)")


def global_condition(net: nn.Module, x_view: torch.Tensor, encoder_view: str,
                     generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """z_global (N, 1, D) of the frozen encoder: the mean of its outputs on a pretraining mask of x_view
    (``masked``) or on every token (``full``). x_view: (N, T, V, C)."""
    with torch.no_grad():
        if encoder_view == "masked":
            z = net.encode(x_view, generator).z_local  # (N, K, D)
        else:
            z = net.encoder.forward_features(x_view).flatten(1, 2)  # (N, L, D)
        return z.mean(dim=1, keepdim=True)  # (N, 1, D)


class GlobalConditionLoss(nn.Module):
    """``forward(x_clean, x_view) -> dict(loss, mse, uniformity)``: the decoder's diffusion loss under the global
    condition (module docstring); the encoder stays in eval mode whatever ``train()`` says."""

    def __init__(self, net: nn.Module, schedule: Any, encoder_view: str = "masked"):
        super().__init__()
        if net.encoder is None or not net.cfg.is_diffusion:
            raise ConfigError(f"decoder fine-tuning needs a MacDiff (encoder + diffusion decoder); method "
                              f"{net.cfg.method!r} has {'no encoder' if net.encoder is None else 'no diffusion'}")
        self.net = net
        self.schedule = schedule
        self.encoder_view = encoder_view
        net.encoder.requires_grad_(False)
        net.encoder.eval()

    def train(self, mode: bool = True) -> "GlobalConditionLoss":
        super().train(mode)
        self.net.encoder.eval()  # frozen: never in training mode (drop path, if any, stays off)
        return self

    def to_device(self, device: torch.device) -> "GlobalConditionLoss":
        self.schedule = self.schedule.to(device)
        return self.to(device)

    def forward(self, x_clean: torch.Tensor, x_view: torch.Tensor) -> dict:
        from macdiff_ray.diffusion import training_loss

        net, cfg = self.net, self.net.cfg
        n, dev = x_clean.shape[0], x_clean.device
        rows = global_condition(net, x_view, self.encoder_view)  # (N, 1, D)
        if self.training and cfg.cond_drop_prob > 0:
            keep = torch.rand(n, device=dev) >= cfg.cond_drop_prob  # (N,)
            rows = rows * keep[:, None, None].to(rows.dtype)  # dropped samples: z = 0
        index = torch.zeros(n, cfg.num_tokens, dtype=torch.int64, device=dev)  # (N, L): every token -> z_global
        t = torch.randint(0, self.schedule.num_steps, (n,), device=dev)  # (N,)
        noise = torch.randn_like(x_clean)  # (N, T, V, C)
        out = training_loss(self.schedule, lambda x_t, tt: net.decoder(x_t, tt, rows, index), x_clean, t, noise,
                            cfg.target, None)
        return {"loss": out["loss"], "mse": out["loss"], "uniformity": out["loss"].new_zeros(())}


def encoder_digest(net: nn.Module) -> str:
    """sha256 over the encoder's state dict (names and exact bytes): equal digests = bit-for-bit equal weights."""
    h = hashlib.sha256()
    for name, t in sorted(net.encoder.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _device(choice: str) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("DecoderFinetuneConfig.device: 'cuda' asked for, but torch sees no GPU")
        return torch.device("cuda")
    return torch.device("cpu")


def _check_source(src: Mapping[str, Any], where: str) -> None:
    if ckpt_lib.checkpoint_method(src) != "macdiff":
        raise ConfigError(f"{where}: method {ckpt_lib.checkpoint_method(src)!r}; decoder fine-tuning needs a MacDiff "
                          "checkpoint (an encoder and a conditional diffusion decoder)")
    if src.get("decoder_finetune"):
        raise ConfigError(f"{where}: already a fine-tuned decoder ({src['decoder_finetune'].get('condition')} "
                          "condition); give the pretraining checkpoint")


def _prune(checkpoints_dir: str, keep: int) -> None:
    names = sorted(p.split("/")[0] for p in storage.list_files(checkpoints_dir) if p.startswith("epoch_"))
    for old in sorted(set(names))[:-keep]:
        storage.delete_dir(storage.join(checkpoints_dir, old))


def run_decoder_finetune(cfg: DecoderFinetuneConfig) -> dict:
    """Fine-tune (or resume fine-tuning) the decoder; writes checkpoints, ``config.json`` and ``results.json`` into
    ``cfg.output`` and returns the results dict."""
    from macdiff_ray.data.pipeline import dataset_stats, iter_torch, make_memory_dataset
    from macdiff_ray.diffusion import DiffusionConfig, make_schedule
    from macdiff_ray.model import MacDiff, ModelConfig
    from macdiff_ray.train.loop import train_epoch
    from macdiff_ray.train.optim import WarmupCosine, build_optimizer

    cfg = absolute_paths(cfg, "checkpoint", "data_dir", "output")
    t_start = time.perf_counter()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    saved = read_json(join(cfg.output, "config.json"))
    if saved is not None:
        new = to_dict(cfg)
        changed = sorted(k for k in set(saved) | set(new) if k not in RESUMABLE and saved.get(k) != new.get(k))
        if changed:
            raise ConfigError(f"{join(cfg.output, 'config.json')}: this run directory was started with another "
                              f"config ({', '.join(f'{k}: {saved.get(k)!r} vs {new.get(k)!r}' for k in changed)}); "
                              "use a new --output or the same settings")
    src = ckpt_lib.load_checkpoint(cfg.checkpoint)
    _check_source(src, cfg.checkpoint)
    benchmark = cfg.benchmark or src["data"]["benchmark"]
    from macdiff_ray.data.manifest import load_manifest

    manifest = load_manifest(cfg.data_dir)
    ckpt_lib.check_compatible(src, None, manifest["layout"], dataset=manifest["dataset"], benchmark=benchmark)
    stats = dataset_stats(cfg.data_dir, benchmark)
    theirs = src["data"]["stats"]
    if not (np.allclose(stats.mean, theirs["mean"], rtol=1e-5, atol=1e-7)
            and np.allclose(stats.std, theirs["std"], rtol=1e-5, atol=1e-7)):
        raise ConfigError(f"{cfg.data_dir}: the {benchmark} statistics differ from the checkpoint's; fine-tune on the "
                          "data the model was pretrained on")
    model_cfg = from_dict(ModelConfig, dict(ckpt_lib.checkpoint_model_config(src), use_compile=False))
    diffusion = (src.get("config") or {}).get("diffusion")
    if diffusion is None:
        raise ConfigError(f"{cfg.checkpoint}: the checkpoint's config has no 'diffusion' entry")
    if cfg.schedule is not None:  # the fine-tuned decoder's own schedule; its checkpoint records it
        diffusion = dict(diffusion, schedule=cfg.schedule)
    device = _device(cfg.device)

    torch.manual_seed(cfg.seed)
    net = MacDiff(model_cfg)
    net.load_state_dict(src["model"], strict=True)
    source_digest = encoder_digest(net)
    wrapper = GlobalConditionLoss(net, make_schedule(from_dict(DiffusionConfig, diffusion)), cfg.encoder_view)
    optimizer = build_optimizer(net.decoder, cfg.lr, cfg.weight_decay, cfg.betas)
    ckpt_dir = join(cfg.output, ckpt_lib.CHECKPOINTS_SUBDIR)
    start_epoch, step, history = 0, 0, []
    try:
        state = ckpt_lib.load_checkpoint(cfg.output)
    except ckpt_lib.CheckpointNotFoundError:
        state = None
    if state is not None:
        ft = state.get("decoder_finetune") or {}
        if ft.get("encoder_sha256") != source_digest:
            raise ConfigError(f"{cfg.output}: its checkpoint was fine-tuned from another encoder than "
                              f"{cfg.checkpoint}'s; use a new --output")
        net.load_state_dict(state["model"], strict=True)
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, step, history = int(state["epoch"]), int(state["step"]), list(ft.get("history", []))
    wrapper.to_device(device)
    for group in optimizer.state.values():  # optimiser state follows the parameters (resume on a GPU)
        for k, v in group.items():
            if isinstance(v, torch.Tensor):
                group[k] = v.to(device)

    split = make_memory_dataset(cfg.data_dir, benchmark, "train", train=True, num_frames=model_cfg.num_frames,
                                seed=cfg.seed + start_epoch, persons=cfg.persons)
    steps = split.count() // cfg.batch_size
    if steps < 1:
        raise ConfigError(f"DecoderFinetuneConfig.batch_size: {cfg.batch_size} exceeds the {split.count()} training "
                          f"samples of {benchmark}")
    if cfg.max_steps_per_epoch is not None:
        steps = min(steps, cfg.max_steps_per_epoch)
    total = steps * cfg.epochs
    schedule = WarmupCosine(cfg.lr, cfg.min_lr, min(total, int(round(cfg.warmup_epochs * steps))), total)
    write_json(join(cfg.output, "config.json"), to_dict(cfg))
    log.warning("decoder fine-tune: %s/%s, %d train samples, %d steps/epoch, epochs %d-%d on %s, condition global "
                "(encoder view %s), encoder frozen", manifest["dataset"], benchmark, split.count(), steps,
                start_epoch + 1, cfg.epochs, device.type, cfg.encoder_view)
    for epoch in range(start_epoch, cfg.epochs):
        torch.manual_seed(cfg.seed + 10007 * (epoch + 1))  # masks, t, noise, dropout: reproducible on resume
        bar = console.StepBar(steps, f"decoder epoch {epoch + 1}/{cfg.epochs}")
        m = train_epoch(wrapper, optimizer, iter_torch(split, cfg.batch_size, shuffle=True, drop_last=True,
                                                       seed=cfg.seed + epoch),
                        lr_schedule=schedule, start_step=step, max_steps=steps, epoch=epoch, device=device,
                        persons=cfg.persons, on_log=lambda k, loss, rate: bar.update(k, loss=loss, samples_s=rate))
        bar.close()
        step = m["step"]
        history.append({"epoch": epoch + 1, "loss": m["loss"], "lr": m["lr"], "samples_per_s": m["samples_per_s"],
                        "epoch_time_s": m["epoch_time_s"]})
        log.warning("decoder epoch %d/%d: loss %.4f, lr %.2e, %.1f samples/s", epoch + 1, cfg.epochs, m["loss"],
                    m["lr"], m["samples_per_s"])
        if (epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == cfg.epochs:
            digest = encoder_digest(net)
            if digest != source_digest:  # the contract of this stage; never expected
                raise RuntimeError("decoder fine-tuning changed the encoder's weights (bug)")
            _save(cfg, src, net, optimizer, epoch + 1, step, model_cfg, benchmark, digest, history, ckpt_dir,
                  diffusion)
    latest = ckpt_lib.find_latest_checkpoint(cfg.output) if not storage.is_uri(cfg.output) else None
    results = {
        "config": to_dict(cfg),
        "source_checkpoint": cfg.checkpoint,
        "source_epoch": int(src.get("epoch", 0)),
        "benchmark": benchmark,
        "condition": "global",
        "encoder_view": cfg.encoder_view,
        "diffusion": diffusion,
        "encoder_sha256": source_digest,
        "encoder_unchanged": encoder_digest(net) == source_digest,
        "trainable_parameters": sum(p.numel() for p in net.decoder.parameters()),
        "device": device.type,
        "steps_per_epoch": steps,
        "start_epoch": start_epoch,
        "final_epoch": history[-1]["epoch"] if history else None,
        "final_loss": history[-1]["loss"] if history else None,
        "checkpoint": str(latest) if latest is not None else join(ckpt_dir, f"epoch_{cfg.epochs:05d}"),
        "history": history,
        "wall_time_s": time.perf_counter() - t_start,
        "code_version": ckpt_lib.code_version(),
    }
    write_json(join(cfg.output, "results.json"), results)
    return results


def _save(cfg: DecoderFinetuneConfig, src: Mapping[str, Any], net: nn.Module, optimizer: torch.optim.Optimizer,
          epoch: int, step: int, model_cfg: Any, benchmark: str, digest: str, history: list, ckpt_dir: str,
          diffusion: Mapping[str, Any]) -> None:
    data = dict(src["data"], benchmark=benchmark)
    # the pretraining run's config, with the schedule the decoder was fine-tuned on (what generation reads)
    state = ckpt_lib.build_state(net, optimizer, None, epoch=epoch, step=step,
                                 config=dict(src["config"], diffusion=dict(diffusion)), model_config=model_cfg,
                                 data=data)
    state["decoder_finetune"] = {
        "condition": "global", "encoder_view": cfg.encoder_view, "epochs": cfg.epochs,
        "schedule": diffusion.get("schedule"),
        "source_schedule": (src["config"].get("diffusion") or {}).get("schedule"),
        "source_checkpoint": cfg.checkpoint, "source_epoch": int(src.get("epoch", 0)), "encoder_sha256": digest,
        "config": to_dict(cfg), "history": list(history),
    }
    name = f"epoch_{epoch:05d}"
    with tempfile.TemporaryDirectory(prefix="macdiff_decft_") as tmp:
        ckpt_lib.save_checkpoint(state, tmp)
        storage.publish_dir(tmp, storage.join(ckpt_dir, name), last=(ckpt_lib.META_FILE,))
    _prune(ckpt_dir, cfg.keep_checkpoints)


def finetune_info(ckpt: Mapping[str, Any]) -> Optional[dict]:
    """The ``decoder_finetune`` section of a checkpoint (None for a pretraining checkpoint)."""
    info = ckpt.get("decoder_finetune")
    return dict(info) if isinstance(info, Mapping) else None
