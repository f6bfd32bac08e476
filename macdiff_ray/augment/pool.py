"""Diffusion augmentation served by a pool of Ray actors, overlapped with fine-tuning (tracker issue 6).

Pieces:

* :func:`load_sources`: the labelled subset of a benchmark's training split. By default (``source_transform=
  "train"``) the raw rows are kept and every chunk passes through the TRAINING transform (random crop and resize
  to the checkpoint's T0, random rotation, normalisation) with the chunk's seed before the one-step denoise, so
  that augmented samples vary as real training batches do. ``"eval"`` passes them once through the evaluation
  transform (centre crop 0.95, no rotation), the behaviour before issue 14.
* :class:`AugmentWorker` (run as a Ray actor): holds the frozen pretrained MacDiff (encoder + decoder, eval mode)
  and augments chunks of source rows with :func:`macdiff_ray.augment.core.augment_batch`.
* :class:`AugmentPool`: K actors; each asks for ``cpu_per_actor`` logical CPUs (fractional by default, RAY-NOTES
  hang 1: whole CPUs per actor starve the trainer's data tasks on a 2-CPU box) and, where the cluster has GPUs,
  ``gpu_per_actor`` of a GPU. A chunk whose actor died (``RayActorError``) is resubmitted to a fresh actor that
  replaces it, so no epoch loses samples; a chunk's noise is seeded by ``(seed, epoch, chunk)``, so the re-run
  gives the same samples it would have.
* :class:`DiffusionAugmenter` (from :func:`build_augmenter`): the fine-tuning loop's interface. ``prefetch(e)``
  submits epoch e's chunks and returns at once; ``collect(e)`` blocks until they are all back and returns
  ``{x (N_aug, M, T0, V, C) float32, person_valid (N_aug, M) bool, label (N_aug,) int64}`` (torch, CPU,
  normalised like the trainer's batches). The loop calls ``prefetch(0)``, then per epoch ``prefetch(e + 1)``
  and ``collect(e)``: epoch e+1 is generated while epoch e trains. Time blocked in ``collect`` is summed in
  ``wait_seconds`` (per epoch in ``wait_log``).

Which sources make an epoch: :func:`macdiff_ray.augment.core.plan_sources` (each source ``floor(ratio)`` times,
plus a seeded without-replacement draw for the fractional part, fresh per epoch).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch

from macdiff_ray.augment.core import (
    FULL_CONDITION_WARNING, augment_batch, check_aug_condition, epoch_chunk_seed, num_augmented, plan_sources,
)
from macdiff_ray.config import ConfigError, from_dict

__all__ = [
    "Sources", "load_sources", "model_bundle", "AugmentWorker", "AugmentPool", "DiffusionAugmenter",
    "build_augmenter", "auto_gpu_per_actor",
]

log = logging.getLogger(__name__)

# Default GPU share of one actor where GPUs exist: inference of the frozen model is light, and four actors fit
# on one GPU beside a trainer that asks for a fraction too. Pass gpu_per_actor to change it.
DEFAULT_GPU_SHARE = 0.25
# An actor with unfinished chunks that returns none for this long is replaced (AugmentPool.hang_timeout_s). One
# chunk of 64 samples takes seconds on a GPU and under a minute on one CPU thread for the paper preset; 10 minutes
# leaves a wide margin and still ends a hang instead of blocking training forever.
DEFAULT_HANG_TIMEOUT_S = 600.0


# ----------------------------------------------------------------------------------------------------------------
# Source samples
# ----------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Sources:
    """The labelled source samples, evaluation-transformed once.

    x: float32 (N, M, T0, V, C) normalised; person_valid: bool (N, M); label: int64 (N,);
    sample_id: object (N,); meta: int32 columns ``subject``, ``view``, ``setup``, ``replication`` (N,) and the
    string column ``split`` (N,), carried into offline shards; stats: the ``{"mean", "std"}`` used to normalise.
    """

    x: np.ndarray
    person_valid: np.ndarray
    label: np.ndarray
    sample_id: np.ndarray
    meta: dict[str, np.ndarray]
    stats: dict
    # source_transform="train": the raw rows the actors crop and rotate per chunk, and that transform's config
    raw: Optional[dict] = None  # {"x" (N, M, T_max, V, C) metres, "length" (N,), "num_persons" (N,)}
    train_transform: Optional[dict] = None  # TrainTransformConfig fields

    def __len__(self) -> int:
        return int(self.x.shape[0])


def _train_selection(data_dir: str | Path, benchmark: str, labeled_indices: Optional[Sequence[int]],
                     labeled_fraction: Optional[float], subset_seed: int):
    from macdiff_ray.data.pipeline import select_split

    if labeled_indices is not None and labeled_fraction is not None:
        raise ConfigError("labeled_indices and labeled_fraction: give one or neither, not both")
    sel = select_split(data_dir, benchmark, "train", labeled_fraction=labeled_fraction, subset_seed=subset_seed)
    ids = sel.sample_ids
    if labeled_indices is not None:
        idx = np.asarray(labeled_indices)
        if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
            raise ConfigError(f"labeled_indices: expected a non-empty 1-D integer array, got {idx.dtype} {idx.shape}")
        if idx.min() < 0 or idx.max() >= len(ids):
            raise ConfigError(
                f"labeled_indices: values must index the {len(ids)} training rows of {benchmark!r} in {data_dir}, "
                f"got range [{idx.min()}, {idx.max()}]"
            )
        if len(np.unique(idx)) != idx.size:
            raise ConfigError("labeled_indices: contains duplicates")
        ids = ids[idx]
    if len(ids) == 0:
        raise ValueError(f"{data_dir}: benchmark {benchmark!r} has no training rows to augment")
    return ids, sel.shards


def load_sources(
    data_dir: str | Path,
    benchmark: str,
    *,
    num_frames: int,
    labeled_indices: Optional[Sequence[int]] = None,
    labeled_fraction: Optional[float] = None,
    subset_seed: int = 0,
    persons: str = "all",
    crop: float = 0.95,
    read_batch: int = 256,
    source_transform: str = "train",
) -> Sources:
    """Read the labelled training rows and apply :class:`EvalTransform` once (numpy, in this process).

    ``labeled_indices`` index the rows of ``select_split(data_dir, benchmark, "train")`` (shard = ``sample_id``
    order, the order ``stratified_subset`` is drawn in); ``labeled_fraction`` draws that subset here instead;
    neither: the whole training split. Rows come back in ``sample_id`` order.
    """
    from macdiff_ray.data.pipeline import dataset_stats, read_transformed
    from macdiff_ray.data.transforms import EvalTransform, TrainTransformConfig, decode_batch

    if source_transform not in ("train", "eval"):
        raise ConfigError(f"source_transform: {source_transform!r} is not 'train' or 'eval'")
    ids, shards = _train_selection(data_dir, benchmark, labeled_indices, labeled_fraction, subset_seed)
    stats = dataset_stats(data_dir, benchmark)
    evaluate = EvalTransform(stats, num_frames=num_frames, crop=crop, persons=persons)
    raw_x: list[np.ndarray] = []

    def transform(part):
        if source_transform == "train":
            raw_x.append(decode_batch(part)["x"])  # (B, M, T_max, V, C) metres, kept for per-chunk cropping
        return evaluate(part)

    meta_cols = ("subject", "view", "setup", "replication", "split")
    extra = meta_cols + (("length", "num_persons") if source_transform == "train" else ())
    rows = read_transformed(shards, ids, transform, read_batch=read_batch, extra_columns=extra)
    if len(rows["sample_id"]) != len(ids):
        raise ValueError(f"{data_dir}: found {len(rows['sample_id'])} of the {len(ids)} selected training rows in "
                         "the shards")
    return Sources(
        x=rows["x"],
        person_valid=rows["person_valid"],
        label=rows["label"],
        sample_id=rows["sample_id"],
        meta={c: (np.asarray(rows[c], dtype=object) if c == "split" else np.asarray(rows[c], dtype=np.int32))
              for c in meta_cols},
        stats={"mean": list(stats.mean), "std": list(stats.std)},
        raw=None if source_transform == "eval" else {
            "x": np.ascontiguousarray(np.concatenate(raw_x), np.float32),
            "length": np.asarray(rows["length"], np.int64), "num_persons": np.asarray(rows["num_persons"], np.int64)},
        train_transform=None if source_transform == "eval" else dataclasses.asdict(
            TrainTransformConfig(num_frames=num_frames, persons=persons)),
    )


# ----------------------------------------------------------------------------------------------------------------
# The frozen model
# ----------------------------------------------------------------------------------------------------------------
def require_macdiff(ckpt: Mapping[str, Any], where: Any = "checkpoint") -> None:
    """Diffusion augmentation needs MacDiff's conditional decoder: refuse a baseline checkpoint (ddim/mdm have no
    condition, mae/mamp no diffusion)."""
    from macdiff_ray.train.checkpoint import checkpoint_method

    method = checkpoint_method(ckpt)
    if method != "macdiff":
        raise ConfigError(f"{where}: method {method!r}; diffusion augmentation needs a MacDiff checkpoint (a decoder "
                          "conditioned on the encoder's representation)")


def model_bundle(ckpt: Mapping[str, Any], diffusion: Optional[Mapping[str, Any]] = None) -> dict:
    """What an actor needs to rebuild the frozen model: ``{model, model_config, diffusion, stats}``.

    ``diffusion``: the DiffusionConfig dict; default the checkpoint run config's ``diffusion`` (a pretraining
    checkpoint always has it); a checkpoint without one is refused rather than guessed.
    """
    from macdiff_ray.diffusion import DiffusionConfig

    if diffusion is None:
        diffusion = (ckpt.get("config") or {}).get("diffusion")
        if diffusion is None:
            raise ConfigError(
                "checkpoint config has no 'diffusion' entry (not a pretraining checkpoint?); pass diffusion="
            )
    from_dict(DiffusionConfig, diffusion)  # validate here, on the driver, with a clear error
    return {
        "model": ckpt["model"],
        "model_config": dict(ckpt["model_config"]),
        "diffusion": dict(diffusion),
        "stats": dict(ckpt["data"]["stats"]),
    }


def worker_device() -> torch.device:
    """CUDA inside a Ray worker (or driver) that Ray gave a GPU, else CPU."""
    import ray

    if ray.is_initialized() and ray.get_gpu_ids() and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def load_frozen_model(bundle: Mapping[str, Any], num_threads: int = 1):
    """(model, schedule, device) of a :func:`model_bundle` for an actor: eval mode, no gradients, on
    :func:`worker_device`, with ``num_threads`` torch CPU threads."""
    torch.set_num_threads(max(1, int(num_threads)))
    device = worker_device()
    model, schedule = _build_model(bundle, device)
    return model, schedule, device


def _build_model(bundle: Mapping[str, Any], device: torch.device):
    from macdiff_ray.diffusion import DiffusionConfig, make_schedule
    from macdiff_ray.model import MacDiff, ModelConfig

    cfg = from_dict(ModelConfig, bundle["model_config"])
    model = MacDiff(cfg)
    model.load_state_dict(bundle["model"], strict=True)  # partial loading would be a silent failure
    model.eval().requires_grad_(False).to(device)
    schedule = make_schedule(from_dict(DiffusionConfig, bundle["diffusion"])).to(device)
    return model, schedule


class AugmentWorker:
    """Holds the frozen model; run as a Ray actor by :class:`AugmentPool` (or called directly in-process).

    Args:
        bundle: :func:`model_bundle` output.
        t_start: schedule index t_s.
        data_stats: the ``{"mean", "std"}`` the sources were normalised with. When it differs from the
            checkpoint's (transfer), each present person is mapped into the model's normalisation, augmented
            and mapped back (a per-coordinate affine map; identity, hence skipped, when the stats agree).
        num_threads: torch CPU threads of this actor.
        condition: the decoder condition of :func:`augment_batch` (``"masked"`` or ``"full"``).
    """

    def __init__(self, bundle: Mapping[str, Any], t_start: int, data_stats: Mapping[str, Sequence[float]],
                 num_threads: int = 1, condition: str = "masked", train_transform: Optional[Mapping] = None):
        self.condition = check_aug_condition(condition)
        self._train_cfg = None
        if train_transform is not None:
            from macdiff_ray.data.transforms import TrainTransformConfig

            self._train_cfg = TrainTransformConfig(**dict(train_transform))
        self._data_stats = {k: list(data_stats[k]) for k in ("mean", "std")}
        self.model, self.schedule, self.device = load_frozen_model(bundle, num_threads)
        self.t_start = int(t_start)
        d_mean, d_std = (np.asarray(data_stats[k], np.float64) for k in ("mean", "std"))
        c_mean, c_std = (np.asarray(bundle["stats"][k], np.float64) for k in ("mean", "std"))
        # model space = data space * scale + shift, per coordinate (C,)
        self._scale = torch.tensor(d_std / c_std, dtype=torch.float32, device=self.device)  # (C,)
        self._shift = torch.tensor((d_mean - c_mean) / c_std, dtype=torch.float32, device=self.device)  # (C,)
        self._renorm = not (np.array_equal(d_mean, c_mean) and np.array_equal(d_std, c_std))

    def augment(self, x_src: np.ndarray, valid_src: np.ndarray, rows: np.ndarray, seed: int,
                raw: Optional[Mapping[str, np.ndarray]] = None) -> np.ndarray:
        """Augment ``x_src[rows]``: x_src (N, M, T0, V, C) float32, valid_src (N, M) bool, rows (n,) int64.
        With a training transform (``Sources.train_transform``) and ``raw`` (``Sources.raw``), the rows are instead
        cropped, resized, rotated and normalised from the raw data by that transform, seeded by ``seed``.
        Returns float32 (n, M, T0, V, C) in the data's normalisation."""
        if self._train_cfg is not None and raw is not None:
            from macdiff_ray.data.transforms import TrainTransform

            tf = TrainTransform.from_config(self._data_stats, self._train_cfg, seed=int(seed) % (2**63), epoch=0)
            batch = {"x": raw["x"][rows], "length": raw["length"][rows], "num_persons": raw["num_persons"][rows],
                     "label": np.zeros(len(rows), np.int64)}
            out = tf(batch)
            x_np, valid_np = out["x"], out["person_valid"]  # (n, M, T0, V, C), (n, M)
        else:
            x_np, valid_np = x_src[rows], valid_src[rows]
        x = torch.from_numpy(np.ascontiguousarray(x_np)).to(self.device)  # (n, M, T0, V, C)
        valid = torch.from_numpy(np.ascontiguousarray(valid_np)).to(self.device)  # (n, M)
        gen = torch.Generator(device="cpu").manual_seed(int(seed))  # CPU draw: same noise on CPU and GPU actors
        keep = valid[:, :, None, None, None]  # (n, M, 1, 1, 1)
        if self._renorm:
            x = torch.where(keep, x * self._scale + self._shift, x)  # (n, M, T0, V, C) model normalisation
        out = augment_batch(self.model, self.schedule, x, valid, self.t_start, gen,
                            condition=self.condition)  # (n, M, T0, V, C)
        if self._renorm:
            out = torch.where(keep, (out - self._shift) / self._scale, out)  # back to the data normalisation
        return out.float().cpu().numpy()

    def info(self) -> dict:
        return {"pid": os.getpid(), "device": str(self.device), "threads": torch.get_num_threads()}


def auto_gpu_per_actor(share: float = DEFAULT_GPU_SHARE) -> float:
    """``share`` when the Ray cluster has a GPU or its autoscaler can launch one (demand decides:
    :mod:`macdiff_ray.train.resources`), else 0 (CPU actors)."""
    from macdiff_ray.train.resources import decide_use_gpu, gpu_supply

    return share if decide_use_gpu("auto", share, gpu_supply("GPU"), what="an augmentation actor") else 0.0


# ----------------------------------------------------------------------------------------------------------------
# The pool
# ----------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(eq=False)  # identity, not field, equality (rows are arrays)
class _Task:
    epoch: int
    chunk: int
    rows: np.ndarray  # (n,) source rows
    seed: int
    slot: int
    actor: Any  # the handle it was sent to
    ref: Any  # ObjectRef of its result


class AugmentPool:
    """K :class:`AugmentWorker` actors that replace themselves when one dies.

    Args:
        bundle: :func:`model_bundle` output (put in the object store once; replacements reuse it).
        sources: :class:`Sources` (x and person_valid put in the object store once).
        t_start, num_actors: t_s and K.
        cpu_per_actor: logical CPUs per actor (fractional keeps room for the trainer's data tasks).
        gpu_per_actor: GPU share per actor; None: :func:`auto_gpu_per_actor`.
        num_threads: torch threads per actor (default: ``max(1, floor(cpu_per_actor))``).
        max_replacements: how many dead actors may be replaced in the pool's life before it gives up (a crash
            that repeats on every fresh actor is a bug, not bad luck).
        condition: the decoder condition of :func:`augment_batch` (``"masked"`` or ``"full"``).
        hang_timeout_s: an actor that holds unfinished chunks and returns none of them for this long is taken for
            hung (a stuck CUDA call, a wedged node) and replaced like a dead one; its chunks are resent.
    """

    def __init__(self, bundle: Mapping[str, Any], sources: Sources, t_start: int, num_actors: int = 1, *,
                 cpu_per_actor: float = 0.5, gpu_per_actor: Optional[float] = None,
                 num_threads: Optional[int] = None, max_replacements: Optional[int] = None,
                 condition: str = "masked", hang_timeout_s: float = DEFAULT_HANG_TIMEOUT_S):
        import ray

        if isinstance(num_actors, bool) or not isinstance(num_actors, int) or num_actors < 1:
            raise ConfigError(f"num_actors (--augment-actors): expected an integer >= 1, got {num_actors!r}")
        if not cpu_per_actor >= 0:
            raise ConfigError(f"cpu_per_actor: expected >= 0, got {cpu_per_actor!r}")
        self.condition = check_aug_condition(condition)
        if not ray.is_initialized():
            raise RuntimeError("AugmentPool needs a running Ray (call macdiff_ray.train.runtime.init_ray() first)")
        self.gpu_per_actor = auto_gpu_per_actor() if gpu_per_actor is None else float(gpu_per_actor)
        if not 0.0 <= self.gpu_per_actor <= 1.0:
            raise ConfigError(f"gpu_per_actor: expected a share in [0, 1], got {gpu_per_actor!r}")
        self.cpu_per_actor = float(cpu_per_actor)
        if not hang_timeout_s > 0:
            raise ConfigError(f"hang_timeout_s: expected > 0 seconds, got {hang_timeout_s!r}")
        self.hang_timeout_s = float(hang_timeout_s)
        self._progress: dict[int, float] = {}  # slot -> last time its actor started or returned a chunk
        self.num_threads = int(num_threads) if num_threads is not None else max(1, int(math.floor(cpu_per_actor)))
        self.max_replacements = 3 * num_actors if max_replacements is None else int(max_replacements)
        self.t_start = int(t_start)
        self.replacements = 0
        self._bundle_ref = ray.put(dict(bundle))
        self._x_ref = ray.put(sources.x)
        self._valid_ref = ray.put(sources.person_valid)
        self._raw_ref = ray.put(sources.raw) if sources.raw is not None else None
        self._train_transform = sources.train_transform if sources.raw is not None else None
        self._stats = dict(sources.stats)
        self._cls = ray.remote(AugmentWorker).options(
            num_cpus=self.cpu_per_actor, num_gpus=self.gpu_per_actor, max_restarts=0, max_task_retries=0
        )
        self.actors = [self._new_actor() for _ in range(num_actors)]
        self._progress = {slot: time.monotonic() for slot in range(num_actors)}
        self._tasks: list[_Task] = []
        self._next_slot = 0

    def _new_actor(self):
        return self._cls.remote(self._bundle_ref, self.t_start, self._stats, self.num_threads, self.condition,
                                self._train_transform)

    def _send(self, task: _Task) -> None:
        task.actor = self.actors[task.slot]
        task.ref = task.actor.augment.remote(self._x_ref, self._valid_ref, task.rows, task.seed, self._raw_ref)

    def submit(self, epoch: int, chunk: int, rows: np.ndarray, seed: int) -> _Task:
        """Queue one chunk on the next actor (round robin; actors run their queue in order, so an earlier
        epoch's chunks finish before a later epoch's)."""
        task = _Task(epoch, chunk, np.asarray(rows, np.int64), int(seed), self._next_slot, None, None)
        self._next_slot = (self._next_slot + 1) % len(self.actors)
        self._send(task)
        self._tasks.append(task)
        return task

    def _replace(self, slot: int, dead: Any, err: BaseException) -> None:
        """Replace the dead actor of ``slot`` (if not done yet) and resend every unfinished task it held."""
        import ray

        if self.actors[slot] is not dead:
            return  # already replaced while handling another of its tasks
        if self.replacements >= self.max_replacements:
            raise RuntimeError(
                f"augmentation actor died again after {self.replacements} replacements (max_replacements="
                f"{self.max_replacements}); last error: {err}"
            ) from err
        log.warning("augmentation actor in slot %d died (%s); starting a fresh one", slot, type(err).__name__)
        try:
            ray.kill(dead, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass
        self.replacements += 1
        self.actors[slot] = self._new_actor()
        # the hang clock of a fresh actor starts once it is up: on a busy node its start (a Ray worker, torch, the
        # model) can take longer than hang_timeout_s, and it must not be taken for hung itself
        try:
            ray.get(self.actors[slot].info.remote(), timeout=self.hang_timeout_s)
        except ray.exceptions.GetTimeoutError:
            pass  # not up within a whole timeout: its clock starts now, and a further stall replaces it again
        self._progress[slot] = time.monotonic()
        for t in self._tasks:
            if t.actor is dead:
                self._send(t)  # a result it produced before dying is simply recomputed (same seed, same samples)

    def wait(self, tasks: Sequence[_Task]) -> list[np.ndarray]:
        """Block until every task is done (replacing dead actors and resending their work); results in order."""
        import ray
        from ray.exceptions import RayActorError

        results: dict[int, np.ndarray] = {}
        todo = {id(t): t for t in tasks}
        while todo:
            by_ref = {t.ref: t for t in todo.values()}
            busy = {t.slot for t in todo.values()}
            now = time.monotonic()
            timeout = max(0.05, min(self._progress[s] + self.hang_timeout_s - now for s in busy)) if busy else None
            ready, _ = ray.wait(list(by_ref), num_returns=1, timeout=timeout)
            if not ready:  # no chunk came back in time: replace every actor that has stalled that long
                now = time.monotonic()
                for slot in sorted(busy):
                    if now - self._progress[slot] >= self.hang_timeout_s:
                        self._replace(slot, self.actors[slot], TimeoutError(
                            f"no chunk back from the actor of slot {slot} for {self.hang_timeout_s:g} s"))
                continue
            for ref in ready:
                t = by_ref[ref]
                try:
                    results[id(t)] = ray.get(ref)
                except RayActorError as e:
                    self._replace(t.slot, t.actor, e)  # t was resent; stays in todo
                    continue
                self._progress[t.slot] = time.monotonic()
                del todo[id(t)]
                self._tasks.remove(t)
        return [results[id(t)] for t in tasks]

    def actor_info(self) -> list[dict]:
        import ray

        return ray.get([a.info.remote() for a in self.actors])

    def shutdown(self) -> None:
        import ray

        for a in self.actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # noqa: BLE001 - already dead
                pass
        self.actors = []
        self._tasks = []


# ----------------------------------------------------------------------------------------------------------------
# The fine-tuning loop's interface
# ----------------------------------------------------------------------------------------------------------------
class DiffusionAugmenter:
    """Per-epoch augmented sets from an :class:`AugmentPool`; see the module docstring for the call pattern.

    Attributes: ``num_sources``, ``num_per_epoch`` (N_aug = round(ratio x N)), ``wait_seconds`` (total time
    ``collect`` blocked), ``wait_log`` ({epoch: seconds}), ``gen_log`` ({epoch: seconds from prefetch to the last
    chunk being received}), ``pool``.
    """

    def __init__(self, pool: AugmentPool, sources: Sources, ratio: float, seed: int, chunk_size: int = 64):
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ConfigError(f"chunk_size: expected an integer >= 1, got {chunk_size!r}")
        self.pool = pool
        self.sources = sources
        self.ratio = float(ratio)
        self.seed = int(seed)
        self.chunk_size = chunk_size
        self.num_sources = len(sources)
        self.num_per_epoch = num_augmented(self.num_sources, self.ratio)
        self.wait_seconds = 0.0
        self.wait_log: dict[int, float] = {}
        self.gen_log: dict[int, float] = {}
        self._pending: dict[int, tuple[float, np.ndarray, list[_Task]]] = {}

    def plan(self, epoch: int) -> np.ndarray:
        """Source row of each augmented sample of ``epoch`` (N_aug,) int64 (deterministic from seed, epoch)."""
        return plan_sources(self.num_sources, self.ratio, self.seed, epoch)

    def prefetch(self, epoch: int) -> None:
        """Submit epoch ``epoch``'s chunks to the pool and return at once (no-op if already submitted)."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch: expected a non-negative integer, got {epoch!r}")
        if epoch in self._pending:
            return
        rows = self.plan(epoch)  # (N_aug,)
        tasks = [
            self.pool.submit(epoch, k, rows[a : a + self.chunk_size], epoch_chunk_seed(self.seed, epoch, k))
            for k, a in enumerate(range(0, len(rows), self.chunk_size))
        ]
        self._pending[epoch] = (time.perf_counter(), rows, tasks)

    def collect(self, epoch: int) -> dict[str, torch.Tensor]:
        """Epoch ``epoch``'s augmented set (blocks until ready; submits it first if ``prefetch`` was skipped).

        Returns ``{"x": (N_aug, M, T0, V, C) float32, "person_valid": (N_aug, M) bool, "label": (N_aug,) int64}``.
        """
        t0 = time.perf_counter()
        self.prefetch(epoch)
        started, rows, tasks = self._pending.pop(epoch)
        parts = self.pool.wait(tasks)
        done = time.perf_counter()
        waited = done - t0
        self.wait_seconds += waited
        self.wait_log[epoch] = waited
        self.gen_log[epoch] = done - started
        x = np.concatenate(parts) if parts else np.zeros((0,) + self.sources.x.shape[1:], np.float32)
        if x.shape[0] != len(rows) or not np.isfinite(x).all():
            raise RuntimeError(f"augmentation epoch {epoch}: got {x.shape[0]} samples for {len(rows)} planned, "
                               f"finite={bool(np.isfinite(x).all())}")
        return {
            "x": torch.from_numpy(x),  # (N_aug, M, T0, V, C)
            "person_valid": torch.from_numpy(self.sources.person_valid[rows].copy()),  # (N_aug, M)
            "label": torch.from_numpy(self.sources.label[rows].copy()),  # (N_aug,)
        }

    def shutdown(self) -> None:
        self._pending.clear()
        self.pool.shutdown()

    def __enter__(self) -> "DiffusionAugmenter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()


def build_augmenter(
    checkpoint: str | os.PathLike,
    data_dir: str | os.PathLike,
    benchmark: str,
    labeled_indices: Optional[Sequence[int]] = None,
    t_start: int = 500,
    ratio: float = 1.0,
    num_actors: int = 1,
    seed: int = 0,
    *,
    labeled_fraction: Optional[float] = None,
    subset_seed: int = 0,
    persons: str = "all",
    crop: float = 0.95,
    chunk_size: int = 64,
    cpu_per_actor: float = 0.5,
    gpu_per_actor: Optional[float] = None,
    num_threads: Optional[int] = None,
    diffusion: Optional[Mapping[str, Any]] = None,
    condition: str = "masked",
    source_transform: str = "train",
) -> DiffusionAugmenter:
    """The fine-tuning loop's augmenter (``--augment --t-start T --aug-ratio L --augment-actors K``).

    ``checkpoint``: a pretraining checkpoint dir/file/run dir (``load_checkpoint``); its joint layout must match
    the dataset's. ``labeled_indices``: rows of the benchmark's training split (see :func:`load_sources`); or
    ``labeled_fraction`` + ``subset_seed``; neither = the whole training split. T0 is the checkpoint model's
    ``num_frames``. Needs a running Ray. Remember ``shutdown()`` (or use it as a context manager).
    ``condition``: ``"masked"`` (default) or ``"full"``, see :mod:`macdiff_ray.augment.core`.
    ``source_transform``: ``"train"`` (default: each chunk cropped and rotated afresh) or ``"eval"`` (one centre
    crop), see :func:`load_sources`.
    """
    if check_aug_condition(condition) == "full":
        log.warning(FULL_CONDITION_WARNING)
    from macdiff_ray.data.manifest import load_manifest
    from macdiff_ray.train.checkpoint import check_compatible, load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    manifest = load_manifest(data_dir)
    check_compatible(ckpt, None, manifest["layout"])
    require_macdiff(ckpt, checkpoint)
    bundle = model_bundle(ckpt, diffusion)
    from macdiff_ray.diffusion import DiffusionConfig

    steps = from_dict(DiffusionConfig, bundle["diffusion"]).num_steps
    if isinstance(t_start, bool) or not isinstance(t_start, int) or not 0 <= t_start < steps:
        raise ConfigError(f"t_start (--t-start): expected an integer in [0, {steps - 1}], got {t_start!r}")
    num_augmented(1, ratio)  # validates ratio with a clear message
    sources = load_sources(
        data_dir, benchmark, num_frames=int(bundle["model_config"]["num_frames"]), labeled_indices=labeled_indices,
        labeled_fraction=labeled_fraction, subset_seed=subset_seed, persons=persons, crop=crop,
        source_transform=source_transform,
    )
    pool = AugmentPool(bundle, sources, t_start, num_actors, cpu_per_actor=cpu_per_actor,
                       gpu_per_actor=gpu_per_actor, num_threads=num_threads, condition=condition)
    return DiffusionAugmenter(pool, sources, ratio, seed, chunk_size)
