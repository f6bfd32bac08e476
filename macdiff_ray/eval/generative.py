"""Generative tasks (paper Sec. 4.4, Tables 5 and 6): motion reconstruction by inpainting, unconditional sampling.

Reconstruction (:func:`run_reconstruct`)
    The split's sequences go through :class:`EvalTransform` with the CHECKPOINT's stats (the model's own
    normalisation); every present person is one row ``(T0, V, C)``. Per table row one occlusion is drawn per person
    (seeded): ``frames-n`` = n consecutive frames (``random_frame_occlusion_masks``) or ``part-<name>`` = one body
    part of the manifest's layout over all frames. The occluded entries are recovered with RePaint-style DDIM
    inpainting (``diffusion.inpaint``, ``steps``, ``resample``, ``eta``) in normalised space; the known entries are
    returned exactly. MPJPE is computed de-normalised (metres; the table shows mm) over the occluded joints only.
    Baselines per row: linear interpolation over time (frame rows; a part row has no known frame of the part) and
    the training mean pose (every row; over the benchmark's training split, same transform).

    Condition of the decoder (``condition``):

    * ``visible`` (default): the pretraining condition with "masked tokens = occluded tokens, and then some". At
      every model call the encoder sees a fresh uniform draw of K = ``num_visible`` (the pretraining count,
      (1 - mask_ratio) x L) of the fully observed tokens; every other token, occluded or not drawn, is a masked
      position filled with the mean of the drawn outputs. A token (patch_len frames x one joint) that is only
      partly occluded counts as occluded. A sample with no observed token gets z dropped.
    * ``visible-all``: the encoder sees every observed token at once. Out of distribution for a model pretrained
      at mask ratio 0.9: the decoder never saw z_local at 90% of the positions, and with the released code's
      masked-token loss its output at z_local positions was never trained. Measured on the NW-UCLA tiny model
      (training split, 20 occluded frames): 296 mm against 216 mm for ``visible``, and worse than no condition.
    * ``zeroed``: the encoder sees all tokens of the input with the occluded entries set to 0 (the normalised mean).
    * ``none``: unconditional, z dropped.

    Reconstruction guidance (``recon_guidance`` w, :func:`macdiff_ray.diffusion.inpaint`) corrects every x0
    estimate by the gradient of its error on the observed entries; w = 0 is RePaint's replacement alone.

Sampling (:func:`run_sample`)
    ``num_samples`` single-person sequences by DDIM from pure noise with z dropped (``steps``, ``eta``, default 1:
    stochastic, see :data:`SAMPLE_ETA`; the decoder learnt this mode through condition dropout). Features of the
    generated set and of the real split (the first person of each sample, the same EvalTransform) come from
    :mod:`classifier_features`. Table rows:
    generated vs all real, generated (a draw of at most |B| samples) vs real half B, and the reference row real half
    A vs real half B (two disjoint seeded halves), as in the paper's Table 6.

Distribution: both tasks cut their work into chunks of ``chunk_size`` rows, each with its own seed
(``chunk_seed(seed, task, chunk)``), and send them round-robin to ``workers`` :class:`GenerativeWorker` Ray actors
(fractional CPUs, a GPU share where the cluster has GPUs: the pattern of ``augment.pool``); ``workers=0`` runs in
this process. Results do not depend on the number of workers.

Outputs under ``output``: ``results.json`` (``config``, ``wall_time_s``, ``code_version``, tables), a markdown
table ``reconstruction.md`` / ``generation.md`` and pictures under ``pictures/``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch

from macdiff_ray.config import ConfigError, absolute_paths, from_dict, to_dict

__all__ = [
    "CONDITIONS", "ReconstructConfig", "SampleConfig", "visible_token_mask", "visible_condition", "draw_visible_subset",
    "reconstruct_batch", "sample_batch", "GenerativeWorker", "run_chunks", "load_split", "train_mean_pose",
    "occlusion_rows", "run_reconstruct", "run_sample", "chunk_seed",
]

log = logging.getLogger(__name__)

CONDITIONS = ("visible", "visible-all", "zeroed", "none")
# x0_hat clamp during sampling, in units of the per-coordinate training std. Measured on the prepared training
# splits: max |x| 7.3 (NW-UCLA, 99.9th percentile 4.8) and 4.0 (synthetic), so 8 never clips real data. Without
# it the inverse-cosine schedule's alpha_bar ~ 1e-6 at t = T-1 turns small eps errors into x0 of hundreds of metres.
CLIP_X0 = 8.0
# Reconstruction-guidance weight (diffusion.inpaint), chosen on the NW-UCLA TRAINING split (40 persons, 25 DDIM
# steps, tiny model pretrained 110 epochs; MPJPE mm for 20 occluded frames / occluded left arm): w = 0: 202 / 379,
# 1: 151 / 287, 2: 134 / 239, 3: 129 / 223, 4: 129 / 224. The 80-epoch model: w = 2: 150 / 231, 4: 160 / 229.
RECON_GUIDANCE = 3.0
# DDIM eta of unconditional sampling, chosen on the NW-UCLA TRAINING split (464 samples against 464 real, features of
# the fine-tuned tiny classifier, 110-epoch tiny generator): FID 33.0 (25 steps, eta 0), 35.4 (50, 0), 21.5 (25, 1),
# 21.7 (100, 1). Deterministic DDIM (eta 0, the released code's choice) stays available.
SAMPLE_ETA = 1.0


# ----------------------------------------------------------------------------------------------------------------
# Configs
# ----------------------------------------------------------------------------------------------------------------
def _check_common(cfg: Any, name: str) -> None:
    for f in ("checkpoint", "data_dir", "benchmark", "output"):
        if not isinstance(getattr(cfg, f), str) or not getattr(cfg, f):
            raise ConfigError(f"{name}.{f}: empty; give --{f.replace('_dir', '').replace('_', '-')}")
    if cfg.split not in ("train", "test"):
        raise ConfigError(f"{name}.split: expected 'train' or 'test', got {cfg.split!r}")
    if cfg.steps < 1:
        raise ConfigError(f"{name}.steps (--steps): expected >= 1 DDIM steps, got {cfg.steps}")
    if not 0.0 <= cfg.eta <= 1.0:
        raise ConfigError(f"{name}.eta: expected a value in [0, 1], got {cfg.eta}")
    if cfg.workers < 0:
        raise ConfigError(f"{name}.workers (--workers): expected >= 0 (0 = in-process), got {cfg.workers}")
    if cfg.chunk_size < 1:
        raise ConfigError(f"{name}.chunk_size: expected >= 1, got {cfg.chunk_size}")
    if not 0.0 < cfg.crop <= 1.0:
        raise ConfigError(f"{name}.crop: expected a value in (0, 1], got {cfg.crop}")
    if cfg.cpu_per_worker < 0:
        raise ConfigError(f"{name}.cpu_per_worker: expected >= 0, got {cfg.cpu_per_worker}")
    if cfg.render < 0:
        raise ConfigError(f"{name}.render: expected >= 0, got {cfg.render}")


@dataclass(frozen=True)
class ReconstructConfig:
    """Motion reconstruction (Table 5). ``num_samples`` = 0: every sample of the split, else a seeded subset."""

    checkpoint: str = ""
    data_dir: str = ""
    benchmark: str = ""
    output: str = ""
    split: str = "test"
    frames: tuple[int, ...] = (10, 20, 40)
    parts: tuple[str, ...] = ("trunk", "left_arm", "right_arm", "left_leg", "right_leg")
    condition: str = "visible"
    steps: int = 50
    resample: int = 1
    eta: float = 1.0
    clip_x0: Optional[float] = CLIP_X0  # clamp of x0_hat in normalised units (diffusion._predict); None = off
    recon_guidance: float = RECON_GUIDANCE  # reconstruction-guidance weight (diffusion.inpaint); 0 = off
    num_samples: int = 0
    workers: int = 1
    cpu_per_worker: float = 0.5
    chunk_size: int = 32
    seed: int = 0
    crop: float = 0.95
    render: int = 2

    def __post_init__(self) -> None:
        from macdiff_ray.data.layouts import PART_NAMES

        _check_common(self, "ReconstructConfig")
        if self.condition not in CONDITIONS:
            raise ConfigError(f"ReconstructConfig.condition (--condition): {self.condition!r} is not one of "
                              f"{list(CONDITIONS)}")
        if self.resample < 1:
            raise ConfigError(f"ReconstructConfig.resample (--resample): expected >= 1, got {self.resample}")
        if not self.recon_guidance >= 0:
            raise ConfigError(f"ReconstructConfig.recon_guidance (--guidance): expected >= 0 (0 = off), got "
                              f"{self.recon_guidance}")
        if self.num_samples < 0:
            raise ConfigError(f"ReconstructConfig.num_samples: expected >= 0 (0 = all), got {self.num_samples}")
        if not self.frames and not self.parts:
            raise ConfigError("ReconstructConfig: frames and parts are both empty, no occlusion to evaluate")
        if any(n < 1 for n in self.frames):
            raise ConfigError(f"ReconstructConfig.frames: occluded frame counts must be >= 1, got {self.frames}")
        bad = [p for p in self.parts if p not in PART_NAMES]
        if bad:
            raise ConfigError(f"ReconstructConfig.parts: {bad} not in {list(PART_NAMES)}")


@dataclass(frozen=True)
class SampleConfig:
    """Unconditional generation (Table 6). ``classifier`` empty: the pretraining checkpoint's encoder (fallback,
    labelled). ``num_real`` = 0: every sample of the split."""

    checkpoint: str = ""
    data_dir: str = ""
    benchmark: str = ""
    output: str = ""
    split: str = "test"
    classifier: str = ""
    feature: str = "pooled"
    num_samples: int = 256
    num_real: int = 0
    steps: int = 50
    eta: float = SAMPLE_ETA
    clip_x0: Optional[float] = CLIP_X0  # clamp of x0_hat in normalised units (diffusion._predict); None = off
    workers: int = 1
    cpu_per_worker: float = 0.5
    chunk_size: int = 32
    seed: int = 0
    crop: float = 0.95
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    diversity_pairs: int = 200
    k: int = 3
    render: int = 4

    def __post_init__(self) -> None:
        from macdiff_ray.eval.classifier_features import FEATURE_KINDS

        _check_common(self, "SampleConfig")
        if self.feature not in FEATURE_KINDS:
            raise ConfigError(f"SampleConfig.feature: {self.feature!r} is not one of {list(FEATURE_KINDS)}")
        if self.num_samples < self.k + 1:
            raise ConfigError(f"SampleConfig.num_samples (--num-samples): need more than k={self.k} samples for "
                              f"precision/recall, got {self.num_samples}")
        if self.num_real < 0:
            raise ConfigError(f"SampleConfig.num_real: expected >= 0 (0 = all), got {self.num_real}")
        if self.kid_subsets < 1 or self.kid_subset_size < 2 or self.diversity_pairs < 1 or self.k < 1:
            raise ConfigError("SampleConfig: kid_subsets >= 1, kid_subset_size >= 2, diversity_pairs >= 1, k >= 1")


def chunk_seed(seed: int, task: int, chunk: int) -> int:
    """Seed of one chunk of one task (table row), independent of how chunks are spread over workers."""
    return int(np.random.SeedSequence([int(seed), int(task), int(chunk), 0x6E4]).generate_state(1)[0])


# ----------------------------------------------------------------------------------------------------------------
# Pure torch pieces (no Ray)
# ----------------------------------------------------------------------------------------------------------------
def visible_token_mask(known: torch.Tensor, patch_len: int) -> torch.Tensor:
    """known (N, T, V, C) bool -> (N, L) bool, True where a token's patch_len frames x C coordinates are all known.

    Token order is the encoder's: L = Tp * V, time-major patches then joints."""
    n, t, v, c = known.shape
    if t % patch_len:
        raise ValueError(f"known: T={t} is not a multiple of patch_len={patch_len}")
    tok = known.reshape(n, t // patch_len, patch_len, v, c).all(dim=2).all(dim=-1)  # (N, Tp, V)
    return tok.flatten(1)  # (N, L)


def visible_condition(model: Any, x: torch.Tensor, visible: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode only the visible tokens; the pretraining condition with "masked = occluded".

    x: (n, T, V, C) normalised; visible: (n, L) bool with the SAME count K >= 1 per row.
    Returns the compact condition ``(rows (n, K+1, D), index (n, L))`` for ``model.denoise(x_t, t, rows, index)``.
    """
    return model.encode_visible(x, visible).compact()  # (n, K+1, D), (n, L)


def draw_visible_subset(visible: torch.Tensor, k: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """A uniform random subset of min(k, count) of each row's visible tokens: (n, L) bool -> (n, L) bool.

    ``generator`` must live on ``visible``'s device. Rows with at most k visible tokens come back unchanged."""
    r = torch.rand(visible.shape, generator=generator, device=visible.device)  # (n, L)
    r = torch.where(visible, r, torch.full_like(r, 2.0))  # occluded tokens rank last
    rank = torch.argsort(torch.argsort(r, dim=1), dim=1)  # (n, L) rank of each token in its row
    return visible & (rank < k)  # (n, L)


@torch.no_grad()
def reconstruct_batch(
    model: Any,
    schedule: Any,
    x: torch.Tensor,
    known: torch.Tensor,
    *,
    condition: str = "visible",
    steps: int = 50,
    resample: int = 1,
    eta: float = 1.0,
    generator: Optional[torch.Generator] = None,
    clip_x0: Optional[float] = CLIP_X0,
    recon_guidance: float = 0.0,
) -> torch.Tensor:
    """Inpaint the unknown entries of single-person sequences.

    Args:
        model: a MacDiff (eval mode); schedule: its diffusion schedule.
        x: (N, T, V, C) normalised; values under ``known == False`` are never read by the decoder path (they only
            enter the encoder through fully known tokens, and are zeroed for ``zeroed``).
        known: (N, T, V, C) bool, True = observed.
        condition: one of :data:`CONDITIONS` (module docstring). ``visible`` draws a fresh subset of the observed
            tokens at every model call from ``generator``.
        recon_guidance: reconstruction-guidance weight of :func:`macdiff_ray.diffusion.inpaint` (0 = off).
    Returns:
        (N, T, V, C); equal to ``x`` exactly where ``known``.
    """
    from macdiff_ray.diffusion import inpaint

    if condition not in CONDITIONS:
        raise ValueError(f"condition: {condition!r} is not one of {list(CONDITIONS)}")
    if known.shape != x.shape or known.dtype != torch.bool:
        raise ValueError(f"known: expected bool of shape {tuple(x.shape)}, got {known.dtype} {tuple(known.shape)}")
    target = model.cfg.target
    x_in = torch.where(known, x, torch.zeros_like(x))  # (N, T, V, C) occluded values never reach the model
    out = torch.empty_like(x)  # (N, T, V, C)

    def run(idx: torch.Tensor, cond_fn: Any) -> None:
        """Inpaint rows ``idx``; ``cond_fn()`` gives the compact condition (rows, index) or (None, None)."""

        def model_fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            rows, index = cond_fn()
            return model.denoise(x_t, t, rows, index)  # (n, T, V, C)

        out[idx] = inpaint(schedule, model_fn, x_in[idx], known[idx], steps=steps, resample=resample, eta=eta,
                           target=target, generator=generator, clip_x0=clip_x0,
                           recon_guidance=recon_guidance)  # (n, T, V, C)

    def fixed(rows: Optional[torch.Tensor], index: Optional[torch.Tensor]) -> Any:
        return lambda: (rows, index)

    if condition == "none":
        run(torch.arange(x.shape[0]), fixed(None, None))
    elif condition == "zeroed":
        from macdiff_ray.augment.core import unmasked_condition

        z = unmasked_condition(model, x_in)  # (N, L, D) all tokens of the zeroed input
        run(torch.arange(x.shape[0]), lambda: (z, None))
    else:
        vis = visible_token_mask(known, model.cfg.patch_len)  # (N, L)
        counts = vis.sum(1)  # (N,)
        k_model = model.cfg.num_visible  # the K of pretraining
        keep = counts.clamp(max=k_model) if condition == "visible" else counts  # (N,) tokens the encoder sees
        for k in torch.unique(keep).tolist():  # the encoder needs one K per batch: group rows by K
            idx = torch.nonzero(keep == k).flatten()  # (n,)
            x_g, vis_g = x_in[idx], vis[idx]  # (n, T, V, C), (n, L)
            if k == 0:
                run(idx, fixed(None, None))  # nothing observed at token level: z dropped
            elif bool((counts[idx] == k).all()):
                run(idx, fixed(*visible_condition(model, x_g, vis_g)))  # every observed token fits in K
            else:
                def draw(x_g: torch.Tensor = x_g, vis_g: torch.Tensor = vis_g, k: int = k) -> tuple:
                    with torch.no_grad():  # inpaint's guidance enables grad; the encoder needs none
                        return visible_condition(model, x_g, draw_visible_subset(vis_g, k, generator))

                run(idx, draw)
    return torch.where(known, x, out)  # (N, T, V, C) known entries exactly the input


@torch.no_grad()
def sample_batch(model: Any, schedule: Any, n: int, seed: int, *, steps: int = 50, eta: float = 0.0,
                 device: torch.device | str = "cpu", clip_x0: Optional[float] = CLIP_X0) -> torch.Tensor:
    """Unconditional DDIM samples with z dropped: (n, T0, V, C) in the model's normalisation.

    x_T is drawn on CPU from ``seed`` (then moved), the DDIM noise (eta > 0) from a ``device`` generator seeded
    ``seed + 1``: the same seed gives the same samples on any CPU worker."""
    from macdiff_ray.diffusion import ddim_sample

    cfg = model.cfg
    device = torch.device(device)
    g_cpu = torch.Generator().manual_seed(int(seed))
    x_T = torch.randn((n, cfg.num_frames, cfg.num_joints, cfg.channels), generator=g_cpu)  # (n, T, V, C)

    def model_fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return model.denoise(x_t, t, None)  # (n, T, V, C) z dropped

    g_dev = torch.Generator(device=device.type).manual_seed(int(seed) + 1)
    return ddim_sample(schedule, model_fn, tuple(x_T.shape), steps=steps, eta=eta, target=cfg.target,
                       generator=g_dev, x_T=x_T.to(device), clip_x0=clip_x0)  # (n, T, V, C)


# ----------------------------------------------------------------------------------------------------------------
# Workers
# ----------------------------------------------------------------------------------------------------------------
class GenerativeWorker:
    """Holds the frozen MacDiff of a :func:`macdiff_ray.augment.pool.model_bundle`; a Ray actor or in-process.

    Random draws use generators seeded per chunk, so a chunk gives the same result whichever worker of the same
    device type runs it (CPU and GPU random streams differ).
    """

    def __init__(self, bundle: Mapping[str, Any], num_threads: int = 1):
        from macdiff_ray.augment.pool import load_frozen_model

        self.model, self.schedule, self.device = load_frozen_model(bundle, num_threads)

    def _gen(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self.device.type).manual_seed(int(seed))

    def sample(self, n: int, seed: int, steps: int, eta: float, clip_x0: Optional[float] = CLIP_X0) -> np.ndarray:
        """(n, T0, V, C) float32 normalised samples (:func:`sample_batch`)."""
        out = sample_batch(self.model, self.schedule, n, seed, steps=steps, eta=eta, device=self.device,
                           clip_x0=clip_x0)
        return out.float().cpu().numpy()  # (n, T, V, C)

    def reconstruct(self, x: np.ndarray, known: np.ndarray, seed: int, condition: str, steps: int, resample: int,
                    eta: float, clip_x0: Optional[float] = CLIP_X0, recon_guidance: float = 0.0) -> np.ndarray:
        """x (n, T0, V, C) float32 normalised, known (n, T0, V, C) bool -> (n, T0, V, C) float32."""
        xt = torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(self.device)  # (n, T, V, C)
        kt = torch.from_numpy(np.ascontiguousarray(known, bool)).to(self.device)  # (n, T, V, C)
        out = reconstruct_batch(self.model, self.schedule, xt, kt, condition=condition, steps=steps,
                                resample=resample, eta=eta, generator=self._gen(seed),
                                clip_x0=clip_x0, recon_guidance=recon_guidance)  # (n, T, V, C)
        return out.float().cpu().numpy()

    def info(self) -> dict:
        return {"pid": os.getpid(), "device": str(self.device), "threads": torch.get_num_threads()}


def _make_workers(bundle: Mapping[str, Any], workers: int, cpu_per_worker: float) -> list:
    """``workers`` Ray actor handles (needs a running Ray), or ``[GenerativeWorker]`` in-process for 0."""
    if workers == 0:
        return [GenerativeWorker(bundle, num_threads=max(1, torch.get_num_threads()))]
    import ray

    from macdiff_ray.augment.pool import auto_gpu_per_actor

    if not ray.is_initialized():
        raise RuntimeError("workers >= 1 needs a running Ray (macdiff_ray.train.runtime.init_ray())")
    gpu = auto_gpu_per_actor()
    threads = max(1, int(math.floor(cpu_per_worker)))
    ref = ray.put(dict(bundle))
    cls = ray.remote(GenerativeWorker)
    return [cls.options(num_cpus=cpu_per_worker, num_gpus=gpu).remote(ref, threads) for _ in range(workers)]


def run_chunks(handles: Sequence[Any], method: str, calls: Sequence[tuple], desc: str = "") -> list:
    """Call ``method(*args)`` for each ``args`` of ``calls``, round-robin over ``handles`` (Ray actors or
    in-process workers); results in call order. A progress bar over the chunks (``desc``) on the console."""
    from tqdm.auto import tqdm

    if not handles:
        raise ValueError("run_chunks: no workers")
    bar = tqdm(total=len(calls), desc=desc or method, unit="chunk", leave=False, dynamic_ncols=True)
    try:
        if isinstance(handles[0], GenerativeWorker):
            out = []
            for args in calls:
                out.append(getattr(handles[0], method)(*args))
                bar.update(1)
            return out
        import ray

        refs = [getattr(handles[i % len(handles)], method).remote(*args) for i, args in enumerate(calls)]
        pending = list(refs)
        while pending:  # results stay in call order (ray.get(refs) below); the bar follows completions
            done, pending = ray.wait(pending, num_returns=1)
            bar.update(len(done))
        return ray.get(refs)
    finally:
        bar.close()


def _kill(handles: Sequence[Any]) -> None:
    if handles and not isinstance(handles[0], GenerativeWorker):
        import ray

        for h in handles:
            ray.kill(h)


# ----------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------
def load_split(data_dir: str, benchmark: str, split: str, *, stats: Mapping[str, Sequence[float]], num_frames: int,
               crop: float = 0.95, limit: int = 0, seed: int = 0, read_batch: int = 256) -> dict:
    """Rows of one split through :class:`EvalTransform` (in this process).

    ``limit`` > 0 keeps a seeded random subset of that many samples (in sample_id order). Returns numpy
    ``x (N, M, T0, V, C)`` float32 normalised with ``stats``, ``person_valid (N, M)``, ``label (N,)``,
    ``sample_id (N,)``.
    """
    from macdiff_ray.data.pipeline import read_transformed, select_split
    from macdiff_ray.data.transforms import EvalTransform

    sel = select_split(data_dir, benchmark, split)
    ids = sel.sample_ids
    if len(ids) == 0:
        raise ValueError(f"{data_dir}: benchmark {benchmark!r} split {split!r} has no rows")
    if 0 < limit < len(ids):
        keep = np.sort(np.random.default_rng([int(seed), 0x5A]).choice(len(ids), limit, replace=False))
        ids = ids[keep]
    transform = EvalTransform(stats, num_frames=num_frames, crop=crop)
    return read_transformed(sel.shards, ids, transform, read_batch=read_batch)


def train_mean_pose(data_dir: str, benchmark: str, *, stats: Mapping[str, Sequence[float]], num_frames: int,
                    crop: float = 0.95, read_batch: int = 256) -> np.ndarray:
    """Mean pose (V, C) in metres over every frame of every present person of the training split (streamed)."""
    import pyarrow.parquet as pq

    from macdiff_ray.data.benchmarks import split_filter
    from macdiff_ray.data.pipeline import select_split
    from macdiff_ray.data.transforms import EvalTransform

    sel = select_split(data_dir, benchmark, "train")
    if len(sel) == 0:
        raise ValueError(f"{data_dir}: benchmark {benchmark!r} has no training rows for the mean pose")
    transform = EvalTransform(stats, num_frames=num_frames, crop=crop)
    mean = np.asarray(stats["mean"], np.float64)  # (C,)
    std = np.asarray(stats["std"], np.float64)  # (C,)
    total, count = None, 0
    for shard in sel.shards:
        table = pq.read_table(shard, filters=split_filter(benchmark, "train"))
        for a in range(0, table.num_rows, read_batch):
            out = transform(table.slice(a, read_batch))
            persons = out["x"][out["person_valid"]].astype(np.float64) * std + mean  # (P, T0, V, C) metres
            s = persons.sum(axis=(0, 1))  # (V, C)
            total = s if total is None else total + s
            count += persons.shape[0] * persons.shape[1]
    return total / count  # (V, C)


def _persons(split: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Present persons as rows: (P, T0, V, C) and their (sample, person) index (P, 2)."""
    valid = split["person_valid"]  # (N, M)
    where = np.argwhere(valid)  # (P, 2)
    return split["x"][valid], where


# ----------------------------------------------------------------------------------------------------------------
# Reconstruction driver
# ----------------------------------------------------------------------------------------------------------------
def occlusion_rows(cfg: ReconstructConfig, layout: Any, num_persons: int, T: int, V: int, C: int,
                   rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
    """``[(row name, known mask (P, T, V, C) bool)]``: ``frames-n`` rows then ``part-<name>`` rows."""
    from macdiff_ray.eval.occlusion import part_occlusion_mask, random_frame_occlusion_masks

    rows = []
    for n in cfg.frames:
        if n >= T:
            raise ConfigError(f"frames (--frames): cannot occlude {n} of the model's T0={T} frames (keep some known)")
        rows.append((f"frames-{n}", random_frame_occlusion_masks(T, V, C, n, batch_size=num_persons, seed=rng)))
    for p in cfg.parts:
        m = part_occlusion_mask(layout, p, T, C)  # (T, V, C)
        rows.append((f"part-{p}", np.broadcast_to(m, (num_persons, T, V, C)).copy()))
    return rows


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=float) + "\n")
    os.replace(tmp, path)


def _fmt(v: Optional[float], digits: int = 1) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def reconstruction_markdown(result: Mapping[str, Any]) -> str:
    """The Table-5-style markdown table of :func:`run_reconstruct`'s result (MPJPE in mm)."""
    c = result["config"]
    lines = [
        f"Motion reconstruction on {result['data']['dataset']} {c['benchmark']}/{c['split']} "
        f"({result['num_persons']} persons), MPJPE over occluded joints in mm (lower is better). "
        f"Inpainting: {c['steps']} DDIM steps, resample {c['resample']}, eta {c['eta']}, reconstruction "
        f"guidance {c.get('recon_guidance', 0.0)}, condition "
        f"`{c['condition']}`; checkpoint {result['checkpoint']['path']} (epoch {result['checkpoint']['epoch']}).",
        "",
        "| occlusion | MacDiff inpainting | linear interpolation | training mean pose |",
        "| --- | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['name']} | {_fmt(r['macdiff_mm'])} | {_fmt(r['linear_interp_mm'])} | "
                     f"{_fmt(r['mean_pose_mm'])} |")
    return "\n".join(lines) + "\n"


def _data_info(manifest: Mapping[str, Any]) -> dict:
    return {"dataset": manifest["dataset"], "layout": manifest["layout"]["name"], "units": manifest.get("units", "m")}


def _load_generator(checkpoint: str, data_dir: str):
    from macdiff_ray.augment.pool import model_bundle
    from macdiff_ray.data.layouts import JointLayout
    from macdiff_ray.data.manifest import load_manifest
    from macdiff_ray.train.checkpoint import check_compatible, load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    manifest = load_manifest(data_dir)
    check_compatible(ckpt, None, manifest["layout"])
    bundle = model_bundle(ckpt)
    info = {"path": str(checkpoint), "epoch": int(ckpt.get("epoch", 0)), "step": int(ckpt.get("step", 0)),
            "note": (ckpt.get("config") or {}).get("note")}
    return bundle, manifest, JointLayout.from_dict(manifest["layout"]), info


def run_reconstruct(cfg: ReconstructConfig) -> dict:
    """Run the reconstruction table; writes ``results.json``, ``reconstruction.md`` and pictures into
    ``cfg.output``; returns the results dict (rows carry ``macdiff_m``/``_mm``, baselines, ``num_persons``)."""
    cfg = absolute_paths(cfg, "checkpoint", "data_dir", "output")
    from macdiff_ray.eval.gen_metrics import mpjpe
    from macdiff_ray.eval.occlusion import linear_interpolation_fill, mean_pose_fill
    from macdiff_ray.train.checkpoint import code_version

    t_start = time.perf_counter()
    out_dir = Path(cfg.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    bundle, manifest, layout, ckpt_info = _load_generator(cfg.checkpoint, cfg.data_dir)
    stats = bundle["stats"]
    mc = bundle["model_config"]
    T, V, C = int(mc["num_frames"]), int(mc["num_joints"]), int(mc["channels"])
    split = load_split(cfg.data_dir, cfg.benchmark, cfg.split, stats=stats, num_frames=T, crop=cfg.crop,
                       limit=cfg.num_samples, seed=cfg.seed)
    x, where = _persons(split)  # (P, T, V, C) normalised
    mean, std = (np.asarray(stats[k], np.float32) for k in ("mean", "std"))  # (C,), (C,)
    x_m = x * std + mean  # (P, T, V, C) metres
    mean_pose = train_mean_pose(cfg.data_dir, cfg.benchmark, stats=stats, num_frames=T, crop=cfg.crop)  # (V, C)
    rng = np.random.default_rng([int(cfg.seed), 0x0CC])
    specs = occlusion_rows(cfg, layout, x.shape[0], T, V, C, rng)

    handles = _make_workers(bundle, cfg.workers, cfg.cpu_per_worker)
    rows, recons = [], {}
    try:
        for task, (name, known) in enumerate(specs):
            calls = [(x[a : a + cfg.chunk_size], known[a : a + cfg.chunk_size], chunk_seed(cfg.seed, task, j),
                      cfg.condition, cfg.steps, cfg.resample, cfg.eta, cfg.clip_x0, cfg.recon_guidance)
                     for j, a in enumerate(range(0, x.shape[0], cfg.chunk_size))]
            t0 = time.perf_counter()
            rec = np.concatenate(run_chunks(handles, "reconstruct", calls, desc=f"reconstruct {name}"))  # (P, T, V, C)
            gen_s = time.perf_counter() - t0
            if not np.array_equal(rec[known], x[known]):
                raise AssertionError(f"{name}: inpainting changed known entries (bug)")
            rec_m = rec * std + mean  # (P, T, V, C) metres
            err = mpjpe(rec_m, x_m, known_mask=known)
            mp = mpjpe(mean_pose_fill(x_m, known, mean_pose), x_m, known_mask=known)
            li = (mpjpe(linear_interpolation_fill(x_m, known), x_m, known_mask=known)
                  if name.startswith("frames-") else None)
            rows.append({"name": name, "macdiff_m": err, "macdiff_mm": 1000 * err, "mean_pose_m": mp,
                         "mean_pose_mm": 1000 * mp, "linear_interp_m": li,
                         "linear_interp_mm": None if li is None else 1000 * li,
                         "occluded_joints": int((~known).all(-1).sum()), "generation_s": gen_s})
            recons[name] = (rec_m, known)
            log.warning("reconstruct %s: MacDiff %.1f mm, mean pose %.1f mm%s (%.1f s)", name, 1000 * err, 1000 * mp,
                        "" if li is None else f", linear interp {1000 * li:.1f} mm", gen_s)
    finally:
        _kill(handles)

    pictures = _render_reconstructions(out_dir / "pictures", layout, x_m, recons, cfg.render)
    result = {
        "task": "reconstruct",
        "config": to_dict(cfg),
        "checkpoint": ckpt_info,
        "data": _data_info(manifest),
        "num_samples": int(split["x"].shape[0]),
        "num_persons": int(x.shape[0]),
        "model_frames": T,
        "rows": rows,
        "pictures": pictures,
        "wall_time_s": time.perf_counter() - t_start,
        "code_version": code_version(),
    }
    (out_dir / "reconstruction.md").write_text(reconstruction_markdown(result))
    _write_json(out_dir / "results.json", result)
    return result


def _render_reconstructions(folder: Path, layout: Any, truth: np.ndarray, recons: Mapping[str, tuple],
                            count: int) -> list[str]:
    """Per row: a grid (occluded input / reconstruction over the ground truth) for the first ``count`` persons and
    a GIF of the first one."""
    from macdiff_ray.viz.render import render_gif, render_grid

    paths: list[str] = []
    if count == 0:
        return paths
    for name, (rec, known) in recons.items():
        seqs, labels, overlays, highlights = [], [], [], []
        for i in range(min(count, truth.shape[0])):
            occluded = ~known[i]  # (T, V, C)
            seqs += [truth[i], rec[i]]
            labels += [f"person {i}: ground truth (occluded: ringed, whole frames boxed)",
                       f"person {i}: MacDiff ({name}) over truth"]
            overlays += [None, truth[i]]
            highlights += [occluded, occluded]
        paths.append(str(render_grid(seqs, labels, layout, folder / f"reconstruct_{name}.png",
                                     overlays=overlays, highlights=highlights)))
        paths.append(str(render_gif(rec[0], layout, folder / f"reconstruct_{name}.gif", overlay=truth[0],
                                    highlight=~known[0], title=f"MacDiff {name}")))
    return paths


# ----------------------------------------------------------------------------------------------------------------
# Sampling driver
# ----------------------------------------------------------------------------------------------------------------
def generation_markdown(result: Mapping[str, Any]) -> str:
    """The Table-6-style markdown table of :func:`run_sample`'s result."""
    c = result["config"]
    feats = result["features"]
    warn = (" **FALLBACK: features from the pretraining encoder, NOT a trained action classifier.**"
            if feats["fallback"] else "")
    lines = [
        f"Unconditional generation on {result['data']['dataset']} {c['benchmark']}/{c['split']}: "
        f"{c['num_samples']} DDIM samples ({c['steps']} steps, eta {c['eta']}, z dropped); checkpoint "
        f"{result['checkpoint']['path']} (epoch {result['checkpoint']['epoch']}). Features: {feats['source']}, "
        f"{feats['kind']} ({feats['checkpoint']}).{warn}",
        "",
        "| set A | set B | FID | KID (x1e3) | diversity A | diversity B | precision | recall |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        m = r["metrics"]
        lines.append(f"| {r['a']} (n={m['num_fake']}) | {r['b']} (n={m['num_real']}) | {m['fid']:.3f} | "
                     f"{1e3 * m['kid_mean']:.2f} ± {1e3 * m['kid_std']:.2f} | {m['diversity_fake']:.3f} | "
                     f"{m['diversity_real']:.3f} | {m['precision']:.3f} | {m['recall']:.3f} |")
    return "\n".join(lines) + "\n"


def run_sample(cfg: SampleConfig) -> dict:
    """Generate, featurise and score; writes ``results.json``, ``generation.md``, ``samples.npy`` (metres) and
    pictures into ``cfg.output``; returns the results dict."""
    cfg = absolute_paths(cfg, "checkpoint", "data_dir", "output", "classifier")
    from macdiff_ray.eval.classifier_features import load_feature_extractor
    from macdiff_ray.eval.gen_metrics import generation_metrics
    from macdiff_ray.train.checkpoint import code_version

    t_start = time.perf_counter()
    out_dir = Path(cfg.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    bundle, manifest, layout, ckpt_info = _load_generator(cfg.checkpoint, cfg.data_dir)
    stats = bundle["stats"]
    T = int(bundle["model_config"]["num_frames"])
    extractor = load_feature_extractor(cfg.classifier or cfg.checkpoint, kind=cfg.feature)
    if extractor.layout_name is not None and extractor.layout_name != layout.name:
        raise ConfigError(f"classifier {extractor.checkpoint}: layout {extractor.layout_name!r} differs from the "
                          f"data's {layout.name!r}")

    handles = _make_workers(bundle, cfg.workers, cfg.cpu_per_worker)
    try:
        sizes = [min(cfg.chunk_size, cfg.num_samples - a) for a in range(0, cfg.num_samples, cfg.chunk_size)]
        calls = [(n, chunk_seed(cfg.seed, 0, j), cfg.steps, cfg.eta, cfg.clip_x0) for j, n in enumerate(sizes)]
        t0 = time.perf_counter()
        fake = np.concatenate(run_chunks(handles, "sample", calls, desc="generate"))  # (S, T, V, C) normalised
        gen_s = time.perf_counter() - t0
    finally:
        _kill(handles)
    if not np.all(np.isfinite(fake)):
        raise FloatingPointError(f"{int((~np.isfinite(fake)).sum())} non-finite values in the generated samples")

    split = load_split(cfg.data_dir, cfg.benchmark, cfg.split, stats=stats, num_frames=T, crop=cfg.crop,
                       limit=cfg.num_real, seed=cfg.seed)
    first = np.argmax(split["person_valid"], axis=1)  # (N,) first present person (actor 1)
    real = split["x"][np.arange(split["x"].shape[0]), first]  # (N, T, V, C)
    if real.shape[0] < 2 * (cfg.k + 1):
        raise ValueError(f"{cfg.split} split has {real.shape[0]} samples; the real-vs-real row needs at least "
                         f"{2 * (cfg.k + 1)}")
    f_fake = extractor.features(fake, stats)  # (S, F)
    f_real = extractor.features(real, stats)  # (N, F)
    perm = np.random.default_rng([int(cfg.seed), 0x4EA]).permutation(real.shape[0])  # (N,)
    half_a, half_b = perm[: real.shape[0] // 2], perm[real.shape[0] // 2 :]
    matched = np.random.default_rng([int(cfg.seed), 0x3A7]).permutation(f_fake.shape[0])[: len(half_b)]
    kw = dict(seed=cfg.seed, kid_subsets=cfg.kid_subsets, kid_subset_size=cfg.kid_subset_size,
              diversity_pairs=cfg.diversity_pairs, k=cfg.k)
    rows = [
        {"a": "generated", "b": "real (all)", "metrics": generation_metrics(f_real, f_fake, **kw)},
        {"a": "generated (size-matched)", "b": "real half B",
         "metrics": generation_metrics(f_real[half_b], f_fake[matched], **kw)},
        {"a": "real half A (reference)", "b": "real half B",
         "metrics": generation_metrics(f_real[half_b], f_real[half_a], **kw)},
    ]
    mean, std = (np.asarray(stats[k], np.float32) for k in ("mean", "std"))
    fake_m = fake * std + mean  # (S, T, V, C) metres
    np.save(out_dir / "samples.npy", fake_m)
    pictures = _render_samples(out_dir / "pictures", layout, fake_m, real * std + mean, cfg.render)
    result = {
        "task": "sample",
        "config": to_dict(cfg),
        "checkpoint": ckpt_info,
        "data": _data_info(manifest),
        "features": extractor.describe(),
        "num_real": int(real.shape[0]),
        "rows": rows,
        "generation_s": gen_s,
        "samples_per_s": cfg.num_samples / max(gen_s, 1e-9),
        "pictures": pictures,
        "wall_time_s": time.perf_counter() - t_start,
        "code_version": code_version(),
    }
    (out_dir / "generation.md").write_text(generation_markdown(result))
    _write_json(out_dir / "results.json", result)
    return result


def _render_samples(folder: Path, layout: Any, fake: np.ndarray, real: np.ndarray, count: int) -> list[str]:
    from macdiff_ray.viz.render import render_gif, render_grid

    if count == 0:
        return []
    n = min(count, fake.shape[0], real.shape[0])
    seqs = [real[i] for i in range(n)] + [fake[i] for i in range(n)]
    labels = [f"real {i}" for i in range(n)] + [f"generated {i}" for i in range(n)]
    paths = [str(render_grid(seqs, labels, layout, folder / "samples_real_vs_generated.png"))]
    for i in range(n):
        paths.append(str(render_gif(fake[i], layout, folder / f"generated_{i}.gif", title=f"generated {i}")))
    return paths


def config_from_args(cls: type, values: Mapping[str, Any]):
    """Strict config from a flat dict (CLI values; tuples from lists)."""
    return from_dict(cls, {k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items()})


# ----------------------------------------------------------------------------------------------------------------
# Pictures of real sequences or saved samples
# ----------------------------------------------------------------------------------------------------------------
def render_sequences(data_dir: str, output: str, *, benchmark: Optional[str] = None, split: str = "test",
                     count: int = 4, seed: int = 0, samples: Optional[str] = None, num_frames: int = 120,
                     crop: float = 0.95) -> list[str]:
    """PNG strips + GIFs of ``count`` sequences, bones and parts from ``data_dir``'s manifest layout.

    ``samples``: a ``samples.npy`` (S, T, V, C) in metres written by :func:`run_sample` (generated sequences);
    otherwise ``count`` seeded real samples of ``benchmark``/``split`` (EvalTransform with the dataset's stats,
    shown in metres; all persons)."""
    from macdiff_ray.data.layouts import JointLayout
    from macdiff_ray.data.manifest import load_manifest
    from macdiff_ray.data.pipeline import dataset_stats
    from macdiff_ray.viz.render import render_gif, render_strip

    if count < 1:
        raise ConfigError(f"count (--num-samples): expected >= 1, got {count}")
    layout = JointLayout.from_dict(load_manifest(data_dir)["layout"])
    folder = Path(output)
    if samples:
        try:
            arr = np.load(samples, allow_pickle=False)  # (S, T, V, C) metres
        except (ValueError, OSError, EOFError) as e:  # numpy's text for object data advises an unsafe load
            kind = "holds Python objects, not a numeric array" if isinstance(e, ValueError) else str(e)
            raise ValueError(f"{samples}: not a readable .npy array of samples ({kind})") from None
        if arr.ndim != 4 or arr.shape[2] != layout.num_joints:
            raise ValueError(f"{samples}: expected (S, T, V={layout.num_joints}, C), got {arr.shape}")
        seqs = [(f"generated_{i}", arr[i]) for i in range(min(count, arr.shape[0]))]
    else:
        if not benchmark:
            raise ConfigError("render: give --benchmark (real sequences) or --samples samples.npy")
        st = dataset_stats(data_dir, benchmark)
        stats = {"mean": list(st.mean), "std": list(st.std)}
        sp = load_split(data_dir, benchmark, split, stats=stats, num_frames=num_frames, crop=crop, limit=count,
                        seed=seed)
        mean, std = (np.asarray(stats[k], np.float32) for k in ("mean", "std"))
        seqs = []
        for i in range(sp["x"].shape[0]):
            x_m = (sp["x"][i] * std + mean) * sp["person_valid"][i][:, None, None, None]  # (M, T, V, C) absent = 0
            seqs.append((f"real_{sp['sample_id'][i]}", x_m))
    paths = []
    for name, seq in seqs:
        paths.append(str(render_strip(seq, layout, folder / f"{name}.png", title=name)))
        paths.append(str(render_gif(seq, layout, folder / f"{name}.gif", title=name, stride=2)))
    return paths
