"""Linear probe on Ray Train, and the epoch runner shared with fine-tuning (:mod:`macdiff_ray.eval.finetune`).

Protocol (METHOD.md "Linear probe"): the encoder is frozen and in eval mode; the head is ``BatchNorm1d(affine=False)``
+ one ``Linear`` over the ``pooled`` (D, MAMP) or ``per_joint`` (V x D, MacDiff) features, persons averaged; SGD lr
0.1, momentum 0.9, 100 epochs, per-step cosine decay to 0. ``feature="raw"`` probes the normalised coordinates
(no encoder); ``random_init=True`` probes an untrained encoder of ``preset`` (the baseline to beat).

Runner: one Ray Train ``train_func`` for both protocols. Each epoch trains over the ``train`` shard (a fixed number
of global steps, identical on every worker), evaluates the ``test`` shard (correct counts summed over workers), and
reports metrics; rank 0 passes a checkpoint every ``checkpoint_every`` epochs and after the last one. The
checkpoint follows docs/ARCHITECTURE.md (``model`` = encoder + head state) plus ``eval_state`` (history, best
so far), so a re-run with the same ``--output`` resumes exactly like pretraining (Ray Train restores the run named
``checkpoints`` under RUN_DIR).

Reporting: ``results.json`` has ``top1_last``/``top5_last`` (the final epoch) and ``top1_best``/``top5_best`` (the
maximum over evaluated epochs, i.e. best-on-test model selection as in the released code; ``best_epoch_top1`` and
``best_epoch_top5`` say where). All accuracies are fractions in [0, 1].
"""

from __future__ import annotations

import math
import tempfile
import time
from typing import Any, Optional

import torch
from torch import nn

from macdiff_ray import console
from macdiff_ray.config import ConfigError, absolute_paths, from_dict, to_dict
from macdiff_ray.train import checkpoint as ckpt_lib
from macdiff_ray.train.logging import RankZeroWriter, join, log, read_json, write_json
from macdiff_ray.eval.configs import EVAL_RESUMABLE, EvalCommon, FinetuneConfig, LinearEvalConfig  # noqa: F401
from macdiff_ray.train.tracking import RunTracker, resolve_uri

RUN_NAME = "checkpoints"


# --------------------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------------------
def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[int]:
    """Correct counts at each k: logits (B, K), labels (B,). k is capped at the number of classes."""
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices  # (B, kmax)
    hit = top == labels[:, None]  # (B, kmax)
    return [int(hit[:, : min(k, kmax)].any(1).sum()) for k in ks]


def summarize(history: list[dict]) -> dict:
    """Last- and best-epoch accuracies from per-epoch ``{epoch, top1, top5}`` entries (evaluated epochs only)."""
    ev = [h for h in history if h.get("top1") is not None]
    if not ev:
        raise ValueError("no evaluated epoch in the history")
    b1 = max(ev, key=lambda h: (h["top1"], -h["epoch"]))
    b5 = max(ev, key=lambda h: (h["top5"], -h["epoch"]))
    return {"top1_last": ev[-1]["top1"], "top5_last": ev[-1]["top5"], "last_epoch": ev[-1]["epoch"],
            "top1_best": b1["top1"], "top5_best": b5["top5"], "best_epoch_top1": b1["epoch"],
            "best_epoch_top5": b5["epoch"]}


def _all_reduce(values: list[float], device: torch.device) -> list[float]:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)  # (K,)
    dist.all_reduce(t)
    return t.tolist()


def _score(pairs, device: torch.device) -> dict:
    """Top-1/top-5 (fractions) and mean loss of ``(logits (B, K), labels (B,))`` pairs, summed over DDP ranks."""
    n = c1 = c5 = loss_sum = 0.0
    for logits, y in pairs:
        k1, k5 = topk_correct(logits, y)
        c1, c5, n = c1 + k1, c5 + k5, n + y.shape[0]
        loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
    n, c1, c5, loss_sum = _all_reduce([n, c1, c5, loss_sum], device)
    if n == 0:
        raise RuntimeError("evaluation saw no test sample")
    return {"top1": c1 / n, "top5": c5 / n, "test_loss": loss_sum / n, "num_test_seen": int(n)}


@torch.no_grad()
def evaluate(model: nn.Module, batches, device: torch.device) -> dict:
    """Top-1/top-5 accuracy (fractions) and mean loss over ``batches``, summed over DDP ranks."""
    was = model.training
    model.eval()
    try:
        return _score(((model(b["x"].to(device), b["person_valid"].to(device)), b["label"].to(device))
                       for b in batches), device)  # logits (B, K), labels (B,)
    finally:
        model.train(was)


# --------------------------------------------------------------------------------------------------------------
# Protocol pieces (built on the worker)
# --------------------------------------------------------------------------------------------------------------
def build_classifier(cfg: EvalCommon, info: dict, state: Optional[dict] = None):
    """(Classifier, source description) for ``cfg`` on the data described by ``info``."""
    from macdiff_ray.eval.features import build_encoder
    from macdiff_ray.eval.heads import BNMLPHead, Classifier, LinearHead, MLPHead, feature_dim
    from macdiff_ray.eval.transfer import check_alignment, check_transfer, load_joint_map

    frozen = isinstance(cfg, LinearEvalConfig)
    num_joints = info["num_joints"]
    joint_map = None
    if cfg.source == "raw":
        encoder, src = None, {"source": "raw", "model_config": {}, "checkpoint_epoch": None}
        width = 0
    else:
        if cfg.source == "checkpoint":
            state = state if state is not None else ckpt_lib.load_checkpoint(cfg.checkpoint)
            ckpt_layout = (state.get("data") or {}).get("layout")
            check_alignment(state.get("data"), info, cfg.data_dir)
            joint_map = check_transfer(ckpt_layout, info["layout"],
                                       load_joint_map(cfg.joint_map) if cfg.joint_map else None)
            if joint_map is not None:
                num_joints = len(joint_map.index)
        encoder, src = build_encoder(checkpoint=None, preset=cfg.preset, num_joints=num_joints,
                                     num_frames=cfg.num_frames, seed=cfg.seed,
                                     drop_path=0.0 if frozen else getattr(cfg, "drop_path", 0.0),
                                     state=state if cfg.source == "checkpoint" else None)
        width = encoder.cfg.width
        if cfg.source == "checkpoint":
            src["checkpoint"] = cfg.checkpoint
            src["pretrain_data"] = {k: (state.get("data") or {}).get(k) for k in ("dataset", "benchmark")}
            src["pretrain_layout"] = ((state.get("data") or {}).get("layout") or {}).get("name")
    dim = feature_dim(cfg.feature, width, num_joints, cfg.num_frames, info["channels"])
    if frozen:
        head = LinearHead(dim, info["num_classes"])
    else:
        if cfg.head == "bn_mlp":
            head = BNMLPHead(dim, info["num_classes"], cfg.head_hidden or 2048, cfg.head_dropout)
        else:
            head = MLPHead(dim, info["num_classes"], cfg.head_hidden or max(width, 256), cfg.head_dropout)
    model = Classifier(encoder, head, cfg.feature, frozen=frozen, joint_map=joint_map)
    src["joint_map"] = cfg.joint_map
    return model, src


class _Schedule:
    """Per-step lr: optional linear warmup then half cosine from ``peak`` to ``floor``; groups keep ``lr_scale``."""

    def __init__(self, peak: float, floor: float, warmup: int, total: int):
        self.peak, self.floor, self.warmup, self.total = peak, floor, warmup, max(1, total)

    def lr(self, step: int) -> float:
        if step < self.warmup:
            return self.peak * (step + 1) / self.warmup
        prog = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.floor + (self.peak - self.floor) * 0.5 * (1 + math.cos(math.pi * prog))

    def apply(self, opt: torch.optim.Optimizer, step: int) -> float:
        lr = self.lr(step)
        for g in opt.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)
        return lr


def place_and_restore(net: nn.Module, device: torch.device, make_optimizer, state: Optional[dict]):
    """Restore ``state["model"]``, move ``net`` to ``device``, THEN build the optimiser (``make_optimizer(net) ->
    (optimizer, schedule)``) and load ``state["optimizer"]``; returns ``(optimizer, schedule)``. ``state`` None: a
    fresh start.

    The order matters on a GPU: ``Optimizer.load_state_dict`` casts each state tensor (SGD momentum, AdamW moments)
    to the device its parameter has at load time, so loading before the move leaves them on the CPU and the first
    step after a resume fails. Building the optimiser after the move also keeps it pointing at the parameters
    that train (pretraining has the same order).
    """
    if state is not None:
        net.load_state_dict(state["model"])  # strict: a partial load is an error
    net.to(device)
    optimizer, schedule = make_optimizer(net)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
    return optimizer, schedule


def _build_optim(cfg: EvalCommon, model, steps: int):
    total = steps * cfg.epochs
    if isinstance(cfg, LinearEvalConfig):
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=cfg.effective_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        return opt, _Schedule(cfg.effective_lr, 0.0, 0, total)
    from macdiff_ray.eval.heads import layer_decay_groups

    # Layer-wise decay protects pretrained features; a random init has none to protect (its embeddings would
    # train at decay**(depth+1) of the lr for nothing), so the from-scratch baseline trains every layer at lr.
    decay = 1.0 if cfg.source == "random" else cfg.layer_decay
    groups = layer_decay_groups(model, cfg.lr, cfg.weight_decay, decay)
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999))
    warm = min(total, int(round(cfg.warmup_epochs * steps)))
    return opt, _Schedule(cfg.lr, min(cfg.min_lr, cfg.lr), warm, total)


def plan_steps(cfg: EvalCommon, num_train: int, world: int) -> tuple[int, int]:
    """(steps per epoch, per-worker batch), identical on every worker. A labelled subset smaller than the batch
    gets one step of ``num_train // world`` samples per worker."""
    per_worker = cfg.batch_size // world
    if num_train < world:
        raise ConfigError(f"{num_train} training samples cannot be split over {world} workers")
    if num_train < cfg.batch_size:
        per_worker = num_train // world
    steps = max(1, num_train // (per_worker * world))
    if cfg.max_steps_per_epoch is not None:
        steps = min(steps, cfg.max_steps_per_epoch)
    return steps, per_worker


# --------------------------------------------------------------------------------------------------------------
# Frozen-feature cache (linear probe)
# --------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def encode_batches(net, batches, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen features ``(N, F)`` float32 on the CPU and labels ``(N,)`` of every batch (``x``, ``person_valid``,
    ``label``), in batch order, computed exactly as the probe's forward pass does (``Classifier.features``)."""
    feats, labels = [], []
    for b in batches:
        f = net.features(b["x"].to(device), b["person_valid"].to(device))  # (B, F)
        feats.append(f.float().cpu())
        labels.append(b["label"].long())
    if not feats:
        raise RuntimeError("encode_batches: no batch to encode")
    return torch.cat(feats), torch.cat(labels)


class FeatureCache:
    """In-memory frozen features of the training split: ``views``, a list of ``(features (N_v, F), labels (N_v,))``,
    one per pass over the split (each pass with its own random crops and rotations when the input is augmented).

    ``batches(steps, batch, generator, epoch)`` yields ``steps`` batches ``{"f" (B, F), "label" (B,)}`` from view
    ``epoch % len(views)`` in a fresh random order (wrapping into a new permutation when a pass runs out): a cached
    epoch replays one recorded augmented epoch, as the streaming probe would see a new one."""

    def __init__(self, views: list[tuple[torch.Tensor, torch.Tensor]]):
        if not views:
            raise ValueError("FeatureCache: no view")
        for i, (f, y) in enumerate(views):
            if f.ndim != 2 or y.shape != (f.shape[0],) or f.shape[0] == 0:
                raise ValueError(f"FeatureCache: view {i} has features {tuple(f.shape)} and labels {tuple(y.shape)}")
        self.views = views

    def batches(self, steps: int, batch: int, generator: torch.Generator, epoch: int):
        f, y = self.views[epoch % len(self.views)]
        n = y.shape[0]
        order = torch.empty(0, dtype=torch.long)
        for _ in range(steps):
            while order.numel() < batch:
                order = torch.cat([order, torch.randperm(n, generator=generator)])
            idx, order = order[:batch], order[batch:]
            yield {"f": f[idx], "label": y[idx]}  # (B, F), (B,)


def build_feature_cache(net, train_views, device: torch.device) -> FeatureCache:
    """One :func:`encode_batches` per element of ``train_views`` (an iterable of batch iterables)."""
    return FeatureCache([encode_batches(net, batches, device) for batches in train_views])


@torch.no_grad()
def evaluate_features(head: nn.Module, feats: torch.Tensor, labels: torch.Tensor, device: torch.device,
                      chunk: int = 1024) -> dict:
    """:func:`evaluate` on cached features: top-1/top-5 and mean loss, summed over DDP ranks."""
    was = head.training
    head.eval()
    try:
        return _score(((head(feats[i:i + chunk].to(device)), labels[i:i + chunk].to(device))
                       for i in range(0, feats.shape[0], chunk)), device)
    finally:
        head.train(was)


def _mix_chunks(aug: Optional[dict], steps: int) -> list[Optional[dict]]:
    """Split this worker's augmented samples into ``steps`` chunks, one appended to each real batch."""
    if aug is None or aug["label"].shape[0] == 0:
        return [None] * steps
    n = aug["label"].shape[0]
    bounds = [round(i * n / steps) for i in range(steps + 1)]
    return [{k: v[bounds[i]:bounds[i + 1]] for k, v in aug.items()} if bounds[i + 1] > bounds[i] else None
            for i in range(steps)]


def _cat_batch(b: dict, extra: Optional[dict]) -> dict:
    if extra is None:
        return b
    xa, pa = extra["x"], extra["person_valid"]  # (n, M', T, V, C), (n, M')
    m = b["x"].shape[1]
    if xa.shape[1] < m:  # pad absent persons
        pad = m - xa.shape[1]
        xa = torch.cat([xa, xa.new_zeros(xa.shape[0], pad, *xa.shape[2:])], 1)  # (n, M, T, V, C)
        pa = torch.cat([pa, pa.new_zeros(pa.shape[0], pad)], 1)  # (n, M)
    xa, pa = xa[:, :m], pa[:, :m]
    return {"x": torch.cat([b["x"], xa.to(b["x"].dtype)]), "person_valid": torch.cat([b["person_valid"], pa.bool()]),
            "label": torch.cat([b["label"], extra["label"].long()])}


def _augment_collect(augmenter, epoch: int, epochs: int, rank: int, world: int) -> tuple[Optional[dict], float]:
    """Rank 0 drives the augmenter (prefetch e+1, collect e) and sends each rank only its rows ``[r::world]``
    (a scatter: broadcasting the whole set moved ``world`` times the data a rank keeps). Returns (this worker's
    samples, seconds blocked)."""
    t0 = time.perf_counter()
    parts = None
    keys = ("x", "person_valid", "label")
    if rank == 0:
        if epoch + 1 < epochs:
            augmenter.prefetch(epoch + 1)
        data = augmenter.collect(epoch)
        for k in keys:
            if k not in data:
                raise KeyError(f"augmenter.collect({epoch}) lacks {k!r}; has {sorted(data)}")
        parts = [{k: torch.as_tensor(data[k])[r::world] for k in keys} for r in range(world)]
    if world > 1:
        import torch.distributed as dist

        box = [None]
        dist.scatter_object_list(box, parts, src=0)
        mine = box[0]
    else:
        mine = parts[0]
    waited = time.perf_counter() - t0
    return mine, waited


def train_func(config: dict) -> dict:
    """Ray Train worker loop for ``config = {"protocol": "linear"|"finetune", "cfg": dict, "augmenter": obj|None}``."""
    import ray.train
    import ray.train.torch as rtt

    from macdiff_ray.data.pipeline import iter_torch
    from macdiff_ray.eval.features import ckpt_data_section, describe_eval_data
    from macdiff_ray.train.pretrain import report_epoch

    cls = LinearEvalConfig if config["protocol"] == "linear" else FinetuneConfig
    cfg = from_dict(cls, config["cfg"])
    augmenter = config.get("augmenter")
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = rtt.get_device()
    info = describe_eval_data(cfg.data_dir, cfg.benchmark)
    num_train = int(config["num_train"])
    steps, per_worker = plan_steps(cfg, num_train, world)

    torch.manual_seed(cfg.seed)
    pre_state = ckpt_lib.load_checkpoint(cfg.checkpoint) if cfg.source == "checkpoint" else None
    net, src = build_classifier(cfg, info, pre_state)
    pre_state = None
    start_epoch, step, history, resumed_from = 0, 0, [], None
    restored = ray.train.get_checkpoint()
    st = None
    if restored is not None:
        with restored.as_directory() as d:
            st = ckpt_lib.load_checkpoint(d)
        start_epoch, step = int(st["epoch"]), int(st["step"])
        history = list(st.get("eval_state", {}).get("history", []))
        resumed_from = start_epoch
    optimizer, sched = place_and_restore(net, device, lambda m: _build_optim(cfg, m, steps), st)
    st = None
    use_cache = isinstance(cfg, LinearEvalConfig) and cfg.cache_views > 0
    if use_cache:  # only the head trains, on cached features
        model = rtt.prepare_model(net.head)
    else:
        model = rtt.prepare_model(net) if any(p.requires_grad for p in net.parameters()) else net
    label_smoothing = getattr(cfg, "label_smoothing", 0.0)
    writer = RankZeroWriter(cfg.output, rank, purge_step=step if resumed_from is not None else None)
    console.worker_logging()
    tracker = RunTracker(cfg.tracking, cfg.output, rank=rank, config=to_dict(cfg),
                         tags={"macdiff.kind": config["protocol"]},
                         params=dict(to_dict(cfg), protocol=config["protocol"], num_train=num_train,
                                     steps_per_epoch=steps, world_size=world, per_worker_batch=per_worker))
    # Cached linear probes run an epoch in milliseconds: one bar over epochs; otherwise a bar over each epoch's steps
    # and a line per evaluated epoch.
    epoch_bar = console.StepBar(cfg.epochs, f"{config['protocol']} probe", unit="epoch",
                                enabled=rank == 0 and use_cache)
    epoch_bar.update(start_epoch)
    if rank == 0:
        log.warning("%s probe: %s/%s, %d train samples, %d worker(s), %d steps/epoch x %d per worker, source %s%s",
                    config["protocol"], info["dataset"], cfg.benchmark, num_train, world, steps, per_worker,
                    src["source"], f", resuming after epoch {resumed_from}" if resumed_from is not None else "")
    train_shard = ray.train.get_dataset_shard("train")
    test_shard = ray.train.get_dataset_shard("test")
    cache = test_cache = None
    cache_s = 0.0
    if use_cache:
        t_cache = time.perf_counter()
        n_views = cfg.cache_views if cfg.augment_input else 1  # evaluation-transform passes are all identical
        cache = build_feature_cache(
            net, (iter_torch(train_shard, per_worker, shuffle=False) for _ in range(n_views)), device)
        test_cache = encode_batches(net, iter_torch(test_shard, per_worker, shuffle=False), device)
        cache_s = time.perf_counter() - t_cache
        if rank == 0:
            log.warning("linear probe: cached %d training view(s) of %d features and %d test rows in %.1f s",
                        n_views, cache.views[0][0].shape[1], test_cache[1].shape[0], cache_s)
    if augmenter is not None and rank == 0:
        augmenter.prefetch(start_epoch)
    aug_wait_total = 0.0
    metrics: dict = {}
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        aug, aug_wait = (None, 0.0)
        if augmenter is not None:
            aug, aug_wait = _augment_collect(augmenter, epoch, cfg.epochs, rank, world)
            aug_wait_total += aug_wait
        chunks = _mix_chunks(aug, steps)
        torch.manual_seed(cfg.seed + 1009 * (epoch + 1) + rank)  # dropout / drop path; reproducible on resume
        model.train()
        loss_sum = n_seen = 0.0
        done = 0
        if cache is not None:
            gen = torch.Generator().manual_seed(cfg.seed + 7919 * (epoch + 1) + rank)
            source = cache.batches(steps, per_worker, gen, epoch)
        else:
            source = iter_torch(train_shard, per_worker, shuffle=True, drop_last=True, seed=cfg.seed + epoch)
        step_bar = console.StepBar(steps, f"epoch {epoch + 1}/{cfg.epochs}", enabled=rank == 0 and not use_cache)
        for b in source:
            if done == steps:
                break
            lr = sched.apply(optimizer, step)
            if cache is not None:
                y = b["label"].to(device)  # (B,)
                logits = model(b["f"].to(device))  # (B, K)
            else:
                b = _cat_batch(b, chunks[done])
                x, pv, y = b["x"].to(device), b["person_valid"].to(device), b["label"].to(device)
                logits = model(x, pv)  # (B, K)
            loss = nn.functional.cross_entropy(logits, y, label_smoothing=label_smoothing)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"epoch {epoch + 1} step {step}: non-finite loss {float(loss)}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.detach()) * y.shape[0]
            n_seen += y.shape[0]
            step += 1
            done += 1
            step_bar.update(1, loss=float(loss.detach()))
        step_bar.close()
        if done < steps:
            raise RuntimeError(f"epoch {epoch + 1}: worker {rank}'s shard ran out after {done} of {steps} steps "
                               f"({num_train} samples, per-worker batch {per_worker})")
        loss_sum, n_seen = _all_reduce([loss_sum, n_seen], device)
        train_time = time.perf_counter() - t0
        metrics = {"epoch": epoch + 1, "train_loss": loss_sum / max(n_seen, 1), "lr": lr, "step": step,
                   "train_samples": int(n_seen), "epoch_time_s": train_time, "aug_wait_s": aug_wait,
                   "aug_wait_total_s": aug_wait_total}
        last = epoch + 1 == cfg.epochs
        if last or (epoch + 1) % cfg.eval_every == 0:
            if test_cache is not None:
                metrics.update(evaluate_features(net.head, *test_cache, device))
            else:
                metrics.update(evaluate(net, iter_torch(test_shard, per_worker, shuffle=False, drop_last=False),
                                        device))
        else:
            metrics.update(top1=None, top5=None)
        history.append({k: metrics.get(k) for k in ("epoch", "train_loss", "top1", "top5", "lr", "epoch_time_s",
                                                    "aug_wait_s", "train_samples")})
        writer.scalars({"train/loss": metrics["train_loss"], "train/lr": lr, "train/aug_wait_s": aug_wait}, step)
        if metrics.get("top1") is not None:
            writer.scalars({"test/top1": metrics["top1"], "test/top5": metrics["top5"]}, step)
            if rank == 0 and not use_cache:
                log.warning("epoch %d/%d | loss %.4f | top1 %.4f top5 %.4f | %.1f s%s", epoch + 1, cfg.epochs,
                            metrics["train_loss"], metrics["top1"], metrics["top5"], train_time,
                            f" | aug wait {aug_wait:.2f} s" if augmenter is not None else "")
        report_metrics = {k: v for k, v in metrics.items() if v is not None}
        tracker.metrics(report_metrics, step)
        epoch_bar.update(1, loss=metrics["train_loss"], **({"top1": metrics["top1"]} if metrics.get("top1") is not None
                                                           else {}))
        if last or (epoch + 1) % cfg.checkpoint_every == 0:
            writer.flush_to_output()
            if rank == 0:
                state = ckpt_lib.build_state(net, optimizer, None, epoch=epoch + 1, step=step, config=cfg,
                                             model_config=src["model_config"], data=ckpt_data_section(info))
                state["eval_state"] = {"history": history, "protocol": config["protocol"]}
                with tempfile.TemporaryDirectory(prefix="macdiff_eval_ckpt_") as tmp:
                    ckpt_lib.save_checkpoint(state, tmp)
                    if last:
                        tracker.checkpoint(tmp)
                    report_epoch(report_metrics, tmp, f"epoch_{epoch + 1:05d}")
            else:
                report_epoch(report_metrics)
        else:
            report_epoch(report_metrics)
    writer.close()
    epoch_bar.close()
    tracker.finish()
    epochs_run = max(1, cfg.epochs - start_epoch)
    return {"history": history, "start_epoch": start_epoch, "source": src, "steps_per_epoch": steps,
            "mlflow_run_id": tracker.run_id,
            "per_worker_batch": per_worker, "world_size": world, "device": device.type,
            "aug_wait_total_s": aug_wait_total, "feature_cache_s": cache_s,
            "feature_cache_views": len(cache.views) if cache is not None else 0,
            "aug_stalled_fraction": aug_wait_total / max(1e-9, sum(h["epoch_time_s"] for h in history[-epochs_run:]))}


# --------------------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------------------
def _storage_path(output: str) -> str:
    from pathlib import Path

    return output if "://" in output else str(Path(output).resolve())


def build_datasets(cfg: EvalCommon) -> dict:
    """Ray Datasets of the train/test splits; with ``num_workers=0`` (Ray Train's local mode) in-memory splits
    read in this process instead (small datasets: no Ray Data task per pass)."""
    from macdiff_ray.data.pipeline import make_dataset, make_memory_dataset

    if cfg.num_workers == 0:
        return {
            "train": make_memory_dataset(cfg.data_dir, cfg.benchmark, "train", train=cfg.augment_input,
                                         num_frames=cfg.num_frames, seed=cfg.seed, persons="all",
                                         labeled_fraction=cfg.labeled_fraction, subset_seed=cfg.subset_seed),
            "test": make_memory_dataset(cfg.data_dir, cfg.benchmark, "test", train=False, num_frames=cfg.num_frames,
                                        persons="all"),
        }

    common = dict(num_frames=cfg.num_frames, persons="all", materialize=cfg.materialize)
    return {
        "train": make_dataset(cfg.data_dir, cfg.benchmark, "train", train=cfg.augment_input, seed=cfg.seed,
                              labeled_fraction=cfg.labeled_fraction, subset_seed=cfg.subset_seed, **common),
        "test": make_dataset(cfg.data_dir, cfg.benchmark, "test", train=False, **common),
    }


def _check_rerun(cfg: EvalCommon) -> Optional[dict]:
    saved = read_json(join(cfg.output, "config.json"))
    if saved is None:
        return None
    new = to_dict(cfg)
    changed = sorted(k for k in set(saved) | set(new)
                     if k not in EVAL_RESUMABLE and saved.get(k, "<absent>") != new.get(k, "<absent>"))
    if changed:
        detail = "; ".join(f"{k}: saved {saved.get(k, '<absent>')!r} vs now {new.get(k, '<absent>')!r}" for k in changed)
        raise ConfigError(f"{join(cfg.output, 'config.json')}: this run directory was started with another config "
                          f"and cannot be resumed with this one ({detail}); use a new --output")
    return saved


def default_label(cfg: EvalCommon, protocol: str) -> str:
    if cfg.label:
        return cfg.label
    if cfg.source == "raw":
        return "raw coordinates (linear)" if protocol == "linear" else "raw coordinates"
    if cfg.source == "random":
        return (f"random-init {cfg.preset} (frozen)" if protocol == "linear"
                else f"supervised from scratch ({cfg.preset})")
    return "MacDiff (pretrained)"


def run_protocol(cfg: EvalCommon, protocol: str, *, augmenter: Any = None, quiet: bool = False,
                 extra_results: Optional[dict] = None) -> dict:
    """Run (or resume) one linear/fine-tune run on Ray Train; writes and returns ``results.json``."""
    cfg = absolute_paths(cfg, "data_dir", "checkpoint", "joint_map", "output")
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig

    from macdiff_ray.data.pipeline import select_split
    from macdiff_ray.eval.features import describe_eval_data
    from macdiff_ray.train.runtime import ingest_config, init_ray, resolve_use_gpu, trainer_class

    if not cfg.output:
        raise ConfigError(f"{type(cfg).__name__}.output: empty; give a run directory (--output)")
    t0 = time.perf_counter()
    info = describe_eval_data(cfg.data_dir, cfg.benchmark)
    if cfg.source == "checkpoint":  # fail early, on the driver, with the transfer/compatibility message
        from macdiff_ray.eval.transfer import check_alignment, check_transfer, load_joint_map

        state = ckpt_lib.load_checkpoint(cfg.checkpoint)
        check_alignment(state.get("data"), info, cfg.data_dir)
        check_transfer((state.get("data") or {}).get("layout"), info["layout"],
                       load_joint_map(cfg.joint_map) if cfg.joint_map else None)
        del state
    sel = select_split(cfg.data_dir, cfg.benchmark, "train", labeled_fraction=cfg.labeled_fraction,
                       subset_seed=cfg.subset_seed)
    num_train = len(sel)
    plan_steps(cfg, num_train, max(1, cfg.num_workers))
    saved = _check_rerun(cfg)
    init_ray(quiet=quiet)
    use_gpu = resolve_use_gpu(cfg.use_gpu, max(1, cfg.num_workers))
    write_json(join(cfg.output, "config.json"), to_dict(cfg))
    resources = {"CPU": cfg.cpus_per_worker}
    if use_gpu:
        resources["GPU"] = 1
    trainer = trainer_class()(
        train_func,
        train_loop_config={"protocol": protocol, "cfg": to_dict(cfg), "augmenter": augmenter, "num_train": num_train},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=RunConfig(name=RUN_NAME, storage_path=_storage_path(cfg.output),
                             checkpoint_config=CheckpointConfig(num_to_keep=cfg.keep_checkpoints),
                             failure_config=FailureConfig(max_failures=cfg.max_failures)),
        datasets=build_datasets(cfg),
        dataset_config=ingest_config(),
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    summary = result.return_value or {}
    history = summary.get("history", [])
    results = {
        "protocol": protocol,
        "label": default_label(cfg, protocol),
        "config": to_dict(cfg),
        "source": summary.get("source"),
        "data": {k: info[k] for k in ("dataset", "benchmark", "num_classes")} | {"num_train_used": num_train,
                                                                                   "labeled_fraction": cfg.labeled_fraction},
        "code_version": ckpt_lib.code_version(),
        "wall_time_s": time.perf_counter() - t0,
        **summarize(history),
        "selection_note": "*_last: final epoch; *_best: maximum over evaluated epochs on the test split "
                          "(best-on-test, as the released code reports)",
        "steps_per_epoch": summary.get("steps_per_epoch"),
        "world_size": summary.get("world_size"),
        "device": summary.get("device"),
        "start_epoch": summary.get("start_epoch"),
        "resumed": saved is not None and (summary.get("start_epoch") or 0) > 0,
        # local mode (num_workers=0) persists no checkpoint: its reported directory is a temporary one
        "checkpoint_path": result.checkpoint.path if result.checkpoint is not None and cfg.num_workers else None,
        "mlflow": ({"run_id": summary.get("mlflow_run_id"), "tracking_uri": resolve_uri(cfg.tracking, cfg.output),
                    "experiment": cfg.tracking.experiment} if cfg.tracking.mlflow else None),
        "aug_wait_total_s": summary.get("aug_wait_total_s"),
        "feature_cache_views": summary.get("feature_cache_views"),
        "feature_cache_s": summary.get("feature_cache_s"),
        "aug_stalled_fraction": summary.get("aug_stalled_fraction") if augmenter is not None else None,
        "history": history,
    }
    if extra_results:
        results.update(extra_results)
    write_json(join(cfg.output, "results.json"), results)
    return results


def run_linear_eval(cfg: LinearEvalConfig, *, quiet: bool = False) -> dict:
    """Linear probe end to end; returns ``results.json``."""
    return run_protocol(cfg, "linear", quiet=quiet)


def linear_smoke_overrides() -> dict:
    return {"epochs": 2, "batch_size": 16, "max_steps_per_epoch": 2, "num_frames": 32, "checkpoint_every": 1,
            "smoke_test": True, "materialize": True}
