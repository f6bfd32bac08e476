"""MacDiff pretraining on Ray Train: the per-worker :func:`train_func` and the driver :func:`run_pretrain`.

Worker side (``train_func(config)``, ``config`` = ``to_dict(PretrainConfig)``): rebuilds the config strictly, builds
the model, restores ``ray.train.get_checkpoint()`` if there is one (resume, or restart after a worker failure),
wraps it with ``ray.train.torch.prepare_model`` (DDP: gloo on CPU, NCCL on GPU), and runs :func:`train_epoch`
over its ``get_dataset_shard("train")`` each epoch, reporting metrics every epoch and a checkpoint every
``checkpoint_every`` epochs and after the last one (rank 0 only).

Driver side (``run_pretrain(cfg)``): joins or starts Ray, checks a re-run against the run directory's
``config.json`` and newest checkpoint, builds the ``TorchTrainer`` (:func:`build_trainer`) and writes
``config.json`` / ``results.json``. Re-running the same command with the same RUN_DIR resumes: Ray Train V2
restores a run with the same ``name`` ("checkpoints") and ``storage_path`` (RUN_DIR).

Tune hook (``macdiff_ray.tune``): a Tune trial calls ``train_func`` directly in its own process (world size 1, no
TorchTrainer: Ray 2.60 refuses ``ray.train.get_context/report/get_checkpoint`` inside a Tune function) after
:func:`set_trial_hooks`. The hooks object then supplies the device (``device()``), the datasets
(``get_dataset_shard(name)``), the checkpoint to restore (``get_checkpoint()``, i.e. ``ray.tune.get_checkpoint``),
extra per-epoch metrics (``epoch_metrics(net, epoch, device) -> dict``: the sweep's kNN proxy) and the reporting
target (``report(metrics, checkpoint_dir, checkpoint_name)``, i.e. ``ray.tune.report``); the model is not wrapped by
``prepare_model``. Without hooks (the default) nothing changes.

Tune over a multi-worker trainer (``macdiff_ray.tune.sweep``, trials with ``tune.resources.workers``): the Tune
function trainable calls ``build_trainer(cfg, name=f"checkpoints_{trial_id}", callbacks=[TuneReportCallback()],
train_loop=...)`` (``ray.tune.integration.ray_train``) and ``.fit()``. Its worker function installs
:func:`set_worker_extras` (quiet console, the kNN proxy as rank 0's extra per-epoch metrics) and calls
``train_func``; :func:`report_epoch` (the only place that calls ``ray.train.report``) reaches Tune through the
callback. Without extras (the default) nothing changes.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

from macdiff_ray import console
from macdiff_ray.config import ConfigError, absolute_paths, from_dict, to_dict
from macdiff_ray.train import checkpoint as ckpt_lib
from macdiff_ray.train.config import RESUMABLE_CHANGES, PretrainConfig, resolve_model_config, steps_per_epoch
from macdiff_ray.train.logging import RankZeroWriter, join, log, progress_line, read_json, write_json
from macdiff_ray.train.loop import DiffusionLoss, train_epoch, validate
from macdiff_ray.train.optim import BudgetCosine, WarmupCosine, build_optimizer
from macdiff_ray.train.tracking import RunTracker, resolve_uri

RUN_NAME = "checkpoints"  # Ray Train run name: checkpoints land in RUN_DIR/checkpoints/<epoch_XXXXX>/

_TRIAL_HOOKS: Optional[Any] = None  # set by macdiff_ray.tune in a Tune trial process (see module docstring)
_WORKER_EXTRAS: Optional[Any] = None  # set in a Ray Train worker of a Tune-over-Train trial (see module docstring)


def set_trial_hooks(hooks: Optional[Any]) -> None:
    """Install (or clear with None) the Tune trial hooks of this process: an object with ``device()``,
    ``get_dataset_shard(name)``, ``get_checkpoint()``, ``epoch_metrics(net, epoch, device) -> dict`` and
    ``report(metrics, checkpoint_dir, checkpoint_name)`` (see the module docstring)."""
    global _TRIAL_HOOKS
    _TRIAL_HOOKS = hooks


def set_worker_extras(extras: Optional[Any]) -> None:
    """Install (or clear with None) the extras of this Ray Train worker process: an object with ``quiet`` (no
    bars or epoch lines: a sweep draws its own bar) and ``epoch_metrics(net, epoch, device) -> dict`` (metrics
    added to each epoch's report, e.g. the sweep's kNN proxy on rank 0; ``{}`` elsewhere)."""
    global _WORKER_EXTRAS
    _WORKER_EXTRAS = extras


# --------------------------------------------------------------------------------------------------------------
# Data description shared by driver and workers
# --------------------------------------------------------------------------------------------------------------
def describe_data(cfg: PretrainConfig) -> dict:
    """Manifest facts the run needs: ``dataset, benchmark, layout, stats, num_classes`` (the checkpoint's
    ``data`` section) plus ``num_train`` and ``num_test``."""
    from macdiff_ray.data.manifest import load_manifest

    if not cfg.data_dir:
        raise ConfigError("PretrainConfig.data_dir: empty; give a prepared dataset directory (--data)")
    m = load_manifest(cfg.data_dir)
    if cfg.benchmark not in m["split_counts"]:
        raise ConfigError(
            f"PretrainConfig.benchmark: {cfg.benchmark!r} is not served by {cfg.data_dir} "
            f"(dataset {m['dataset']!r}); choose one of {sorted(m['split_counts'])}"
        )
    counts = m["split_counts"][cfg.benchmark]
    return {
        "dataset": m["dataset"],
        "benchmark": cfg.benchmark,
        "layout": m["layout"],
        "stats": m["stats"][cfg.benchmark],
        "num_classes": m["num_classes"],
        "num_joints": m["num_joints"],
        "num_train": int(counts["train"]),
        "num_test": int(counts.get("test", 0)),
        "align": m.get("align"),  # prepare's option align (None: not turned; absent in manifests before it)
    }


def _checkpoint_data(info: dict) -> dict:
    return {**{k: info[k] for k in ckpt_lib.DATA_KEYS}, "align": info.get("align")}


# --------------------------------------------------------------------------------------------------------------
# Worker side
# --------------------------------------------------------------------------------------------------------------
def report_epoch(metrics: dict, checkpoint_dir: Optional[str] = None, checkpoint_name: Optional[str] = None) -> None:
    """The one reporting shim: ``ray.train.report`` (all ranks; only rank 0 passes a checkpoint directory).

    Under Tune, metrics reach the trial through ``TuneReportCallback`` on the trainer (see module docstring).
    """
    if _TRIAL_HOOKS is not None:
        _TRIAL_HOOKS.report(metrics, checkpoint_dir, checkpoint_name)
        return
    import ray.train

    checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
    ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=checkpoint_name if checkpoint else None)


def _maybe_fail(cfg: PretrainConfig, epoch_number: int, rank: int) -> None:
    """TEST-ONLY fault hook: kill this worker process once (marker file guards against repeats)."""
    if cfg.fail_at_epoch is None or cfg.fail_at_epoch != epoch_number or rank != cfg.fail_rank:
        return
    marker = Path(cfg.fail_once_marker)  # validated non-None with fail_at_epoch
    if marker.exists():
        return
    import ray.train

    # Let the controller commit the checkpoints already reported: a worker that dies within milliseconds of its
    # last report can otherwise race the controller's poll and the restart would begin from scratch.
    ray.train.get_all_reported_checkpoints(timeout_s=60)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"rank {rank} killed itself at the start of epoch {epoch_number} (test-only fault)\n")
    os._exit(1)


def _any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any (ranks' clocks differ; all must stop at the same epoch)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def checkpoint_uri(checkpoint: Any) -> str:
    """A Ray ``Checkpoint``'s location as a path or URI that ``--checkpoint`` accepts: Ray gives the path inside
    its filesystem (``bucket/run/checkpoints/epoch_00002`` on S3), so a non-local filesystem gets its scheme back."""
    path = str(checkpoint.path)
    fs = getattr(checkpoint, "filesystem", None)
    scheme = getattr(fs, "type_name", "local") if fs is not None else "local"
    return path if scheme == "local" or "://" in path else f"{scheme}://{path}"


def _preemption_pending() -> bool:
    """Ray Train V2's preemption notice (``ray.train.get_preemption_info()``: a barrier, so every rank calls it
    once per epoch). False where this Ray has no such call."""
    import ray.train

    get_info = getattr(ray.train, "get_preemption_info", None)
    return get_info is not None and get_info() is not None


def cpu_bf16_native() -> bool:
    """Whether this CPU has native bf16 kernels (oneDNN's check: AVX512-BF16, AMX or AVX512 core)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_cpu_precision(choice: str) -> str:
    """A CPU precision setting with "auto" resolved: bf16 where the CPU has native bf16 kernels, fp32 otherwise.
    With attention in float32 (``model/layers.py``), every preset measured faster in bf16 with a matching loss curve
    (README, issue 16: ``paper`` 1.70x, ``small`` 1.49x, ``tiny`` 1.34x)."""
    if choice != "auto":
        return choice
    return "bf16" if cpu_bf16_native() else "fp32"


def cpu_precision(cfg: PretrainConfig) -> str:
    """``cfg.cpu_precision`` resolved (:func:`resolve_cpu_precision`)."""
    return resolve_cpu_precision(cfg.cpu_precision)


def _amp_dtype(cfg: PretrainConfig, device: torch.device) -> Optional[torch.dtype]:
    """Autocast dtype of the forward pass: ``amp``/``amp_dtype`` on CUDA, ``cpu_precision`` on the CPU."""
    if device.type == "cpu":
        return torch.bfloat16 if cpu_precision(cfg) == "bf16" else None
    if not cfg.amp or device.type != "cuda":
        return None
    return torch.bfloat16 if cfg.amp_dtype == "bfloat16" else torch.float16


def device_batches(batches: Any, transform: Any, device: torch.device, epoch: int) -> Any:
    """``transform_device="train"``: move each decoded batch (``x`` (B, M, T_max, V, C), ``length``,
    ``num_persons``, ``label``) to ``device`` and apply the batched device transform there."""
    for batch in batches:
        yield transform({k: v.to(device, non_blocking=True) for k, v in batch.items()}, epoch=epoch)


def train_func(config: dict) -> dict:
    """Ray Train worker loop. ``config`` is ``to_dict(PretrainConfig)``; rebuilt strictly (unknown keys raise).

    Returns (rank 0's value becomes ``Result.return_value``) a summary with the per-epoch ``history``.
    """
    import ray.train
    import ray.train.torch as rtt

    from macdiff_ray.data.pipeline import iter_torch
    from macdiff_ray.diffusion import make_schedule
    from macdiff_ray.model import MacDiff

    cfg = from_dict(PretrainConfig, config)
    hooks = _TRIAL_HOOKS
    if hooks is None:
        ctx = ray.train.get_context()
        rank, world = ctx.get_world_rank(), ctx.get_world_size()
    else:  # a Tune trial: this process is the only worker
        rank, world = 0, 1
    console.worker_logging()
    # Rank 0 of a Train run prints its bars and epoch lines; a Tune trial stays quiet (the sweep has its own bar).
    extras = _WORKER_EXTRAS if hooks is None else None
    chatty = rank == 0 and hooks is None and not (extras is not None and extras.quiet)
    if cfg.batch_size % world:
        raise ConfigError(f"PretrainConfig.batch_size: {cfg.batch_size} not divisible by {world} workers")
    per_worker_batch = cfg.batch_size // world
    device = rtt.get_device() if hooks is None else hooks.device()
    info = describe_data(cfg)
    model_cfg = resolve_model_config(cfg, info["num_joints"])
    steps = steps_per_epoch(cfg, info["num_train"])
    total_steps = steps * cfg.epochs
    warmup_steps = min(total_steps, int(round(cfg.warmup_epochs * steps)))
    lr_schedule = WarmupCosine(cfg.effective_lr, cfg.min_lr, warmup_steps, total_steps)
    if cfg.budget_minutes is not None:  # a cosine over the wall-clock budget instead of over `epochs`
        lr_schedule = BudgetCosine(cfg.effective_lr, cfg.min_lr, warmup_steps, 60.0 * cfg.budget_minutes)

    torch.manual_seed(cfg.seed)  # identical initial weights on every rank (DDP also broadcasts rank 0's)
    net = MacDiff(model_cfg)
    start_epoch, step, resumed_from = 0, 0, None
    state = None
    prior_history: list = []  # epochs of earlier attempts, carried in the checkpoint ("run_state")
    attempts: list = []  # one entry per attempt (fresh start, in-run restart by Ray, or re-run of the command)
    restored = hooks.get_checkpoint() if hooks is not None else ray.train.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as d:
            state = ckpt_lib.load_checkpoint(d)
        ckpt_lib.check_compatible(state, model_cfg, info["layout"], dataset=info["dataset"], benchmark=cfg.benchmark)
        net.load_state_dict(state["model"])  # strict: a partial load is an error
        start_epoch, step, resumed_from = int(state["epoch"]), int(state["step"]), int(state["epoch"])
        run_state = state.get("run_state") or {}
        prior_history = [h for h in run_state.get("history", []) if int(h.get("epoch", 0)) <= start_epoch]
        attempts = list(run_state.get("attempts", []))
        clock = state.get("budget") or {}
        if cfg.budget_minutes is not None and clock:  # the budget already spent by earlier attempts
            lr_schedule = BudgetCosine(cfg.effective_lr, cfg.min_lr, warmup_steps, float(clock["budget_s"]),
                                       spent_s=float(clock["spent_s"]), warmup_end_s=clock.get("warmup_end_s"))
    attempts.append({"attempt": len(attempts) + 1, "start_epoch": start_epoch,
                     "from_checkpoint": checkpoint_uri(restored) if restored is not None else None,
                     "started_unix": time.time()})

    wrapper = DiffusionLoss(net, make_schedule(cfg.diffusion)).to_device(device)
    # moves to device; DDP when world > 1 (gloo on CPU, NCCL on GPU); a Tune trial has world 1 and no Train context
    model = rtt.prepare_model(wrapper) if hooks is None else wrapper
    optimizer = build_optimizer(net, cfg.effective_lr, cfg.weight_decay, cfg.betas)
    amp_dtype = _amp_dtype(cfg, device)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state["scaler"] is not None:
            scaler.load_state_dict(state["scaler"])
        state = None  # free the CPU copy

    writer = RankZeroWriter(cfg.output, rank, purge_step=step if resumed_from is not None else None)
    tracker = RunTracker(
        cfg.tracking, cfg.output, rank=rank, config=to_dict(cfg), tags={"macdiff.kind": "pretrain"},
        params=dict(to_dict(cfg), model=to_dict(model_cfg), effective_lr=cfg.effective_lr, steps_per_epoch=steps,
                    world_size=world, per_worker_batch=per_worker_batch, num_train=info["num_train"],
                    resumed_from_epoch=-1 if resumed_from is None else resumed_from),
    )
    if chatty:
        log.warning(
            "pretrain: %s/%s, %d train samples, %d worker(s) on %s, global batch %d (%d per worker), "
            "%d steps/epoch, %d epochs (%d steps), peak lr %.3g (%s scaling), warmup %d steps%s",
            info["dataset"], cfg.benchmark, info["num_train"], world, device.type, cfg.batch_size,
            per_worker_batch, steps, cfg.epochs, total_steps, cfg.effective_lr, cfg.lr_scaling, warmup_steps,
            f", resuming after epoch {resumed_from} (step {step})" if resumed_from is not None else "",
        )
    get_shard = ray.train.get_dataset_shard if hooks is None else hooks.get_dataset_shard
    shard = get_shard("train")
    val_shard = get_shard("val") if cfg.validate_every else None
    train_tf = val_tf = None
    if cfg.transform_device == "train":  # Ray Data only decodes; the transforms run here, batched, on `device`
        from macdiff_ray.data.device_transforms import DeviceEvalTransform, DeviceTrainTransform

        train_tf = DeviceTrainTransform(info["stats"], num_frames=cfg.num_frames, persons=cfg.persons,
                                        seed=cfg.seed, stream=rank)
        val_tf = DeviceEvalTransform(info["stats"], num_frames=cfg.num_frames, persons=cfg.persons)
    history = list(prior_history)
    metrics: dict = {}
    epoch_times: list[float] = []
    for epoch in range(start_epoch, cfg.epochs):
        _maybe_fail(cfg, epoch + 1, rank)
        torch.manual_seed(cfg.seed + 10007 * (epoch + 1) + rank)  # masking/t/noise; reproducible on resume
        batches = iter_torch(shard, per_worker_batch, shuffle=True, drop_last=True, seed=cfg.seed + epoch)
        if train_tf is not None:
            batches = device_batches(batches, train_tf, device, epoch)
        bar = console.StepBar(steps, f"epoch {epoch + 1}/{cfg.epochs}", enabled=chatty)
        metrics = train_epoch(
            model, optimizer, batches, lr_schedule=lr_schedule, start_step=step, max_steps=steps, epoch=epoch,
            device=device, persons=cfg.persons, amp_dtype=amp_dtype, scaler=scaler, grad_clip=cfg.grad_clip,
            log_every=cfg.log_every, on_log=lambda n, loss, rate: bar.update(n, loss=loss, samples_s=rate * world),
        )
        bar.close()
        step = metrics["step"]
        if metrics["steps"] < steps:
            raise RuntimeError(
                f"epoch {epoch + 1}: the data shard ran out after {metrics['steps']} of {steps} steps "
                f"({info['num_train']} samples, global batch {cfg.batch_size})"
            )
        if val_shard is not None and (epoch + 1) % cfg.validate_every == 0:
            val_batches = iter_torch(val_shard, per_worker_batch, shuffle=False, drop_last=False)
            if val_tf is not None:
                val_batches = device_batches(val_batches, val_tf, device, epoch)
            metrics.update(validate(
                net, wrapper.schedule, val_batches,
                device=device, persons=cfg.persons, max_batches=cfg.val_max_batches, seed=cfg.seed,
                amp_dtype=amp_dtype,
            ))
        metrics.update(epoch=epoch + 1, steps_per_epoch=steps, world_size=world,
                       resumed_from_epoch=-1 if resumed_from is None else resumed_from)
        if hooks is not None:
            metrics.update(hooks.epoch_metrics(net, epoch + 1, device))
        elif extras is not None:
            metrics.update(extras.epoch_metrics(net, epoch + 1, device))
        epoch_times.append(float(metrics["epoch_time_s"]))
        out_of_budget = False
        if isinstance(lr_schedule, BudgetCosine):
            # The next epoch would not end inside the budget at the pace of the last three: this one is the last.
            recent = sorted(epoch_times[-3:])[len(epoch_times[-3:]) // 2]
            out_of_budget = _any_rank(lr_schedule.spent() + recent > lr_schedule.budget_s, device)
            metrics.update(budget_spent_s=lr_schedule.spent(), budget_progress=lr_schedule.progress())
        history.append({k: metrics[k] for k in ("epoch", "loss", "mse", "uniformity", "lr", "grad_norm",
                                                 "samples_per_s", "epoch_time_s") if k in metrics})
        writer.scalars({f"train/{k}": metrics[k] for k in ("loss", "mse", "uniformity", "lr", "grad_norm",
                                                           "samples_per_s", "epoch_time_s")}, step)
        if "val_loss" in metrics:
            writer.scalars({"val/loss": metrics["val_loss"], "val/mse": metrics["val_mse"]}, step)
        tracker.metrics(metrics, step)
        if chatty:
            log.warning("%s", progress_line(epoch, cfg.epochs, metrics))
        last = epoch + 1 == cfg.epochs or out_of_budget
        # A node of this run is about to be preempted (spot reclaim): checkpoint now, whatever checkpoint_every says.
        preempting = hooks is None and _preemption_pending()
        if last or preempting or (epoch + 1) % cfg.checkpoint_every == 0:
            writer.flush_to_output()
            name = f"epoch_{epoch + 1:05d}"
            if rank == 0:
                state_dict = ckpt_lib.build_state(
                    net, optimizer, scaler, epoch=epoch + 1, step=step, config=cfg, model_config=model_cfg,
                    data=_checkpoint_data(info),
                )
                if isinstance(lr_schedule, BudgetCosine):
                    state_dict["budget"] = lr_schedule.state()
                attempts[-1]["last_checkpoint_epoch"] = epoch + 1
                state_dict["run_state"] = {"history": history, "attempts": attempts}
                with tempfile.TemporaryDirectory(prefix="macdiff_ckpt_") as tmp:
                    ckpt_lib.save_checkpoint(state_dict, tmp)
                    if last:
                        tracker.checkpoint(tmp)
                    report_epoch(metrics, tmp, name)
            else:
                report_epoch(metrics)
        else:
            report_epoch(metrics)
        if out_of_budget:
            break
    writer.close()
    tracker.finish()
    return {
        "history": history,
        "attempts": attempts,
        "start_epoch": start_epoch,
        "mlflow_run_id": tracker.run_id,
        "budget": lr_schedule.state() if isinstance(lr_schedule, BudgetCosine) else None,
        # a re-run of a finished run trains no epoch: its final metrics are the last recorded epoch's
        "final_metrics": metrics or (dict(history[-1]) if history else {}),
        "steps_per_epoch": steps,
        "per_worker_batch": per_worker_batch,
        "world_size": world,
        "device": device.type,
        "amp_dtype": str(amp_dtype) if amp_dtype is not None else None,
        "model_config": to_dict(model_cfg),
    }


# --------------------------------------------------------------------------------------------------------------
# Driver side
# --------------------------------------------------------------------------------------------------------------
def check_resume(cfg: PretrainConfig, info: dict, model_cfg: Any) -> Optional[dict]:
    """Refuse a re-run into an existing RUN_DIR whose config or newest checkpoint does not fit.

    Returns the saved config dict (None for a fresh run dir). Only keys in ``RESUMABLE_CHANGES`` may differ.
    """
    saved = read_json(join(cfg.output, "config.json"))
    if saved is not None:
        new = to_dict(cfg)
        changed = sorted(k for k in set(saved) | set(new)
                         if k not in RESUMABLE_CHANGES and saved.get(k, "<absent>") != new.get(k, "<absent>"))
        if changed:
            detail = "; ".join(f"{k}: saved {saved.get(k, '<absent>')!r} vs now {new.get(k, '<absent>')!r}"
                               for k in changed)
            raise ConfigError(
                f"{join(cfg.output, 'config.json')}: this run directory was started with another config and "
                f"cannot be resumed with this one ({detail}). Use a new --output, or the same settings."
            )
    if not cfg.is_uri:
        latest = ckpt_lib.find_latest_checkpoint(cfg.output)
        if latest is not None:
            state = ckpt_lib.load_checkpoint(latest)
            ckpt_lib.check_compatible(state, model_cfg, info["layout"], dataset=info["dataset"],
                                      benchmark=cfg.benchmark)
    return saved


def _attempt_fields(attempts: list) -> dict:
    """results.json's record of the attempts: the list, and which of them resumed from which checkpoint."""
    resumes = [a for a in attempts if a.get("from_checkpoint")]
    return {"attempts": attempts, "num_resumes": len(resumes), "resumed": bool(resumes),
            "resumed_from": [{"attempt": a["attempt"], "epoch": a["start_epoch"], "checkpoint": a["from_checkpoint"]}
                             for a in resumes]}


def _merge_attempts(trained: list, previous: Optional[dict]) -> list:
    """The attempts of a run that trained: those its checkpoint carried (``trained``), plus the re-runs that trained
    nothing, which only results.json records (:func:`_finished_run` starts no worker, so no checkpoint holds them),
    in the order they started and numbered again from 1."""
    idle = [a for a in (previous or {}).get("attempts", []) if a.get("trained") is False]
    merged = sorted(list(trained) + idle, key=lambda a: a.get("started_unix") or 0.0)
    return [dict(a, attempt=i + 1) for i, a in enumerate(merged)]


def _finished_run(cfg: PretrainConfig, previous: Optional[dict]) -> Optional[dict]:
    """``results.json`` of a run that has already trained ``cfg.epochs`` epochs, and whose checkpoint Ray committed
    last is that epoch's, with this re-run appended to its attempts (it trained nothing); None otherwise. Such a re-run
    starts no Ray Train run, so a finished job submitted again launches no GPU node. A budgeted run always goes
    through Train: its budget, not ``epochs``, says when it is done."""
    if cfg.budget_minutes is not None or not previous or previous.get("final_epoch") != cfg.epochs:
        return None
    if ckpt_lib.committed_checkpoint_name(join(cfg.output, RUN_NAME)) != f"epoch_{cfg.epochs:05d}":
        return None
    attempts = list(previous.get("attempts", []))
    attempts.append({"attempt": len(attempts) + 1, "start_epoch": cfg.epochs,
                     "from_checkpoint": previous.get("checkpoint"), "started_unix": time.time(), "trained": False})
    results = dict(previous, config=to_dict(cfg), start_epoch=cfg.epochs, **_attempt_fields(attempts))
    write_json(join(cfg.output, "results.json"), results)
    log.warning("pretraining: %s has trained all %d epochs already; nothing to do", cfg.output, cfg.epochs)
    return results


def _storage_path(output: str) -> str:
    return output if "://" in output else str(Path(output).resolve())


def build_datasets(cfg: PretrainConfig) -> dict:
    """``{"train": ...}`` (+ ``"val"`` from the test split when ``validate_every`` > 0) Ray Datasets."""
    from macdiff_ray.data.pipeline import make_dataset

    # transform_device="train": the read tasks only decode; the train function applies the transforms on its device
    transform = "decode" if cfg.transform_device == "train" else "auto"
    datasets = {"train": make_dataset(cfg.data_dir, cfg.benchmark, "train", train=True, num_frames=cfg.num_frames,
                                      seed=cfg.seed, persons=cfg.persons, transform=transform)}
    if cfg.validate_every:
        datasets["val"] = make_dataset(cfg.data_dir, cfg.benchmark, "test", train=False,
                                       num_frames=cfg.num_frames, seed=cfg.seed, persons=cfg.persons,
                                       transform=transform)
    return datasets


def build_trainer(
    cfg: PretrainConfig,
    *,
    use_gpu: bool,
    name: str = RUN_NAME,
    callbacks: Optional[Sequence[Any]] = None,
    datasets: Optional[dict] = None,
    train_loop: Optional[Callable[[dict], Any]] = None,
    loop_config: Optional[dict] = None,
    gpus_per_worker: float = 1.0,
):
    """The ``TorchTrainer`` for ``cfg`` (Ray must be initialised). A Tune-over-Train trial passes a trial-specific
    ``name``, ``TuneReportCallback``, its worker function ``train_loop`` (which calls :func:`train_func`) with its
    ``loop_config``, and its GPU share per worker (``gpus_per_worker``, used when ``use_gpu``)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig

    from macdiff_ray.train.runtime import ingest_config, trainer_class

    resources = {"CPU": cfg.cpus_per_worker}
    if use_gpu:
        resources["GPU"] = gpus_per_worker
    return trainer_class()(
        train_loop or train_func,
        train_loop_config=loop_config if loop_config is not None else to_dict(cfg),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=name,
            storage_path=_storage_path(cfg.output),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.keep_checkpoints),
            # max_failures: worker/node errors; preemptions (spot reclaims Ray is told of) have their own budget,
            # unlimited (Ray 2.60 FailureConfig.max_preemption_failures=-1)
            failure_config=FailureConfig(max_failures=cfg.max_failures, max_preemption_failures=-1),
            callbacks=list(callbacks) if callbacks else None,
        ),
        datasets=datasets if datasets is not None else build_datasets(cfg),
        dataset_config=ingest_config(),
    )


def _gpu_decision_text(requested: str, use_gpu: bool) -> str:
    if requested == "no":
        return "use_gpu 'no': CPU"
    from macdiff_ray.train.resources import gpu_supply

    return f"use_gpu {requested!r} -> {'GPU' if use_gpu else 'CPU'}: {gpu_supply('GPU').describe()}"


def run_pretrain(cfg: PretrainConfig, *, quiet: bool = False) -> dict:
    """Run (or resume) one pretraining run end to end; returns the ``results.json`` dict."""
    from macdiff_ray.train.runtime import init_ray, resolve_use_gpu

    if not cfg.output:
        raise ConfigError("PretrainConfig.output: empty; give a run directory or URI (--output)")
    cfg = absolute_paths(cfg, "data_dir", "output")
    t0 = time.perf_counter()
    info = describe_data(cfg)
    model_cfg = resolve_model_config(cfg, info["num_joints"])
    steps_per_epoch(cfg, info["num_train"])  # fails early if the batch exceeds the split
    saved = check_resume(cfg, info, model_cfg)
    # the run directory's results so far (read once: the workers do not write it)
    previous = read_json(join(cfg.output, "results.json")) if saved is not None else None
    done = _finished_run(cfg, previous)
    if done is not None:
        return done
    init_ray(quiet=quiet)
    use_gpu = resolve_use_gpu(cfg.use_gpu, cfg.num_workers)
    gpu_decision = _gpu_decision_text(cfg.use_gpu, use_gpu)
    version = ckpt_lib.code_version()
    write_json(join(cfg.output, "config.json"), to_dict(cfg))
    trainer = build_trainer(cfg, use_gpu=use_gpu)
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    summary = result.return_value or {}
    history = summary.get("history", [])
    final = summary.get("final_metrics", {})
    throughput = [h["samples_per_s"] for h in history]
    start = summary.get("start_epoch") or 0
    first = history[0].get("epoch", 1) if history else None
    if previous and start > 0 and (first is None or first > 1):
        # a checkpoint from before run_state was kept: earlier epochs only in the previous results.json
        history = [h for h in previous.get("history", []) if h.get("epoch", 0) < (first or start + 1)] + history
        if not final and history:
            final = dict(history[-1])
    results = {
        "config": to_dict(cfg),
        "model_config": to_dict(model_cfg),
        "data": {k: info[k] for k in ("dataset", "benchmark", "num_classes", "num_train")},
        "code_version": version,
        "wall_time_s": time.perf_counter() - t0,
        "final_loss": final.get("loss"),
        "final_epoch": final.get("epoch"),
        "samples_per_s_last_epoch": throughput[-1] if throughput else None,
        # epoch 1 of an attempt includes worker warm-up; the steady figure skips it when there is more than one
        "samples_per_s_mean": (sum(throughput[1:]) / len(throughput[1:]) if len(throughput) > 1
                               else (throughput[0] if throughput else None)),
        "steps_per_epoch": summary.get("steps_per_epoch"),
        "per_worker_batch": summary.get("per_worker_batch"),
        "effective_lr": cfg.effective_lr,
        "num_workers": cfg.num_workers,
        "use_gpu": use_gpu,
        "device": summary.get("device"),
        # the forward pass's autocast dtype on the workers (None: fp32), e.g. cpu_precision "auto" resolved there
        "amp_dtype": summary.get("amp_dtype"),
        # which device each part ran on: the Train workers (torch device type), Ray Data's read/transform tasks
        # (CPU tasks), and what the GPU decision saw
        "devices": {"train_workers": summary.get("device"),
                    "data_pipeline": "cpu" if cfg.transform_device == "cpu" else "cpu (decode only)",
                    "transforms": "cpu" if cfg.transform_device == "cpu" else summary.get("device"),
                    "use_gpu_decision": gpu_decision},
        "start_epoch": summary.get("start_epoch"),
        # every attempt of this run: the first start, each restart by Ray Train after a failure, each re-run
        **_attempt_fields(_merge_attempts(summary.get("attempts", []), previous)),
        "checkpoint": checkpoint_uri(result.checkpoint) if result.checkpoint is not None else None,
        "mlflow": ({"run_id": summary.get("mlflow_run_id"), "tracking_uri": resolve_uri(cfg.tracking, cfg.output),
                    "experiment": cfg.tracking.experiment} if cfg.tracking.mlflow else None),
        "history": history,
    }
    write_json(join(cfg.output, "results.json"), results)
    return results
