"""The reconstruction driver (paper Sec. 4.4, Table 5): occlude, reconstruct, score, tabulate, draw.

:func:`run_reconstruct`: the split's sequences go through ``EvalTransform`` with the CHECKPOINT's stats (the
model's own normalisation); every present person is one row ``(T0, V, C)``. Per table row one occlusion is drawn
per person (seeded): ``frames-n`` = n consecutive frames of the model's T0 (``occlusion.random_frame_occlusion_masks``)
or ``part-<name>`` = one body part of the manifest's layout over all frames. The occluded entries are recovered by
:func:`macdiff_ray.generate.inpainting.reconstruct_batch` in normalised space (the known entries are returned
exactly). MPJPE is computed de-normalised (metres; the table shows mm) over the occluded joints only, at T0 and,
with ``native`` (default), at the data's own frame rate (:func:`macdiff_ray.generate.metrics.native_mpjpe`): on
short sequences resampled up to T0, an n-frame gap of T0 covers fewer native frames, so each row also states the
gap in native frames. Baselines per row: linear interpolation over time (frame rows; a part row has no known frame
of the part) and the training mean pose (every row; over the benchmark's training split, same transform).

The protocol follows the checkpoint (``condition="auto"``, ``recon_guidance=None``): a decoder fine-tuned by
``experiments/finetune_decoder.py`` runs the paper's protocol (global condition, RePaint-style inpainting without
guidance); a MacDiff pretraining checkpoint the ``visible`` condition with reconstruction guidance
:data:`inpainting.RECON_GUIDANCE`; ddim / mdm unconditional inpainting; mae its regression. Every diffusion
inpainting repeats each step :data:`inpainting.RESAMPLE` times (RePaint's resampling; ``resample`` overrides).
``init`` ``interpolation`` starts each frame row's chain from the linear interpolation of its gap, ``init_strength``
of the way (SDEdit; :data:`inpainting.INITS`); part rows, whose joints have no known frame, start from noise.
The table's header names the protocol each run used. mamp cannot reconstruct.

Outputs under ``output``: ``results.json`` (``config``, ``protocol``, ``wall_time_s``, ``code_version``, rows),
``reconstruction.md`` and pictures under ``pictures/``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from macdiff_ray.config import ConfigError, absolute_paths, to_dict
from macdiff_ray.generate.common import (
    CLIP_X0, check_common, chunk_seed, data_info, fmt, load_generator, write_json,
)
from macdiff_ray.generate.data import load_split, native_windows, persons_of, train_mean_pose
from macdiff_ray.generate.inpainting import (
    CONDITIONS, check_init, default_guidance, default_resample, resolve_condition,
)
from macdiff_ray.generate.workers import kill_workers, make_workers, run_chunks

__all__ = ["ReconstructConfig", "occlusion_rows", "reconstruction_markdown", "run_reconstruct", "describe_protocol"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReconstructConfig:
    """Motion reconstruction (Table 5). ``num_samples`` = 0: every sample of the split, else a seeded subset.
    ``condition`` ``auto`` and ``recon_guidance`` None follow the checkpoint (module docstring)."""

    checkpoint: str = ""
    data_dir: str = ""
    benchmark: str = ""
    output: str = ""
    split: str = "test"
    frames: tuple[int, ...] = (10, 20, 40)
    parts: tuple[str, ...] = ("trunk", "left_arm", "right_arm", "left_leg", "right_leg")
    condition: str = "auto"
    steps: int = 50
    resample: Optional[int] = None  # RePaint resampling per DDIM step; None = the protocol's (default_resample)
    eta: float = 1.0
    clip_x0: Optional[float] = CLIP_X0  # clamp of x0_hat in normalised units (diffusion._predict); None = off
    recon_guidance: Optional[float] = None  # reconstruction-guidance weight (diffusion.inpaint); None = protocol's
    init: str = "noise"  # where a frame row's chain starts: noise, or interpolation (SDEdit; inpainting.INITS)
    init_strength: float = 1.0  # with init interpolation: the fraction of the chain run (1 = the whole, from noise)
    native: bool = True  # also score on the data's own frames (native_mpjpe)
    num_samples: int = 0
    workers: int = 1
    cpu_per_worker: float = 0.5
    chunk_size: int = 32
    seed: int = 0
    crop: float = 0.95
    render: int = 2

    def __post_init__(self) -> None:
        from macdiff_ray.data.layouts import PART_NAMES

        check_common(self, "ReconstructConfig")
        if self.condition not in CONDITIONS:
            raise ConfigError(f"ReconstructConfig.condition (--condition): {self.condition!r} is not one of "
                              f"{list(CONDITIONS)}")
        if self.resample is not None and self.resample < 1:
            raise ConfigError(f"ReconstructConfig.resample (--resample): expected >= 1, got {self.resample}")
        if self.recon_guidance is not None and not self.recon_guidance >= 0:
            raise ConfigError(f"ReconstructConfig.recon_guidance (--guidance): expected >= 0 (0 = off), got "
                              f"{self.recon_guidance}")
        check_init(self.init, self.init_strength, where="ReconstructConfig.")
        if self.init == "interpolation" and self.init_strength == 1.0:
            raise ConfigError("ReconstructConfig.init_strength (--init-strength): init 'interpolation' needs a "
                              "strength below 1 (at 1 the chain starts from pure noise and ignores the interpolation)")
        if self.num_samples < 0:
            raise ConfigError(f"ReconstructConfig.num_samples: expected >= 0 (0 = all), got {self.num_samples}")
        if not self.frames and not self.parts:
            raise ConfigError("ReconstructConfig: frames and parts are both empty, no occlusion to evaluate")
        if any(n < 1 for n in self.frames):
            raise ConfigError(f"ReconstructConfig.frames: occluded frame counts must be >= 1, got {self.frames}")
        bad = [p for p in self.parts if p not in PART_NAMES]
        if bad:
            raise ConfigError(f"ReconstructConfig.parts: {bad} not in {list(PART_NAMES)}")


def describe_protocol(method: str, condition: str, guidance: float, decoder_finetune: Optional[Mapping]) -> dict:
    """What a run did, for its table and results: ``{method, decoder, condition, guidance, inpainting, label}``."""
    decoder = "fine-tuned (global condition)" if decoder_finetune else "pretrained"
    if method == "mae":
        how = "regression of the masked tokens (no diffusion)"
    else:
        how = "RePaint-style DDIM inpainting" + (f" + reconstruction guidance w={guidance:g}" if guidance else "")
    paper = bool(decoder_finetune) and condition.startswith("global") and guidance == 0 and method == "macdiff"
    label = f"{method}, {decoder} decoder, condition `{condition}`, {how}" + (" (the paper's protocol)" if paper else "")
    return {"method": method, "decoder": decoder, "condition": condition, "guidance": guidance, "inpainting": how,
            "paper_protocol": paper, "label": label}


def occlusion_rows(cfg: ReconstructConfig, layout: Any, num_persons: int, T: int, V: int, C: int,
                   rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
    """``[(row name, known mask (P, T, V, C) bool)]``: ``frames-n`` rows then ``part-<name>`` rows."""
    from macdiff_ray.generate.occlusion import part_occlusion_mask, random_frame_occlusion_masks

    rows = []
    for n in cfg.frames:
        if n >= T:
            raise ConfigError(f"frames (--frames): cannot occlude {n} of the model's T0={T} frames (keep some known)")
        rows.append((f"frames-{n}", random_frame_occlusion_masks(T, V, C, n, batch_size=num_persons, seed=rng)))
    for p in cfg.parts:
        m = part_occlusion_mask(layout, p, T, C)  # (T, V, C)
        rows.append((f"part-{p}", np.broadcast_to(m, (num_persons, T, V, C)).copy()))
    return rows


def reconstruction_markdown(result: Mapping[str, Any]) -> str:
    """The Table-5-style markdown table of :func:`run_reconstruct`'s result (MPJPE in mm)."""
    c, proto = result["config"], result["protocol"]
    native = any(r.get("macdiff_native_mm") is not None for r in result["rows"])
    lines = [
        f"Motion reconstruction on {result['data']['dataset']} {c['benchmark']}/{c['split']} "
        f"({result['num_persons']} persons, model T0 = {result['model_frames']} frames), MPJPE over occluded joints "
        f"in mm (lower is better). Protocol: {proto['label']}; {c['steps']} DDIM steps, "
        f"resample {proto.get('resample', c['resample'])}, "
        + (f"frame rows started from the linear interpolation, {proto['init_strength']:g} of the chain (SDEdit), "
           if proto.get("init", "noise") != "noise" else "") +
        f"eta {c['eta']}; checkpoint {result['checkpoint']['path']} (epoch {result['checkpoint']['epoch']}).",
        "",
    ]
    if native:
        lines += ["| occlusion | native frames occluded | model | model (native) | linear interpolation | "
                  "linear interpolation (native) | training mean pose | training mean pose (native) |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in result["rows"]:
            lines.append(f"| {r['name']} | {fmt(r.get('native_frames_occluded'))} | {fmt(r['macdiff_mm'])} | "
                         f"{fmt(r.get('macdiff_native_mm'))} | {fmt(r['linear_interp_mm'])} | "
                         f"{fmt(r.get('linear_interp_native_mm'))} | {fmt(r['mean_pose_mm'])} | "
                         f"{fmt(r.get('mean_pose_native_mm'))} |")
    else:
        lines += ["| occlusion | model | linear interpolation | training mean pose |", "| --- | ---: | ---: | ---: |"]
        for r in result["rows"]:
            lines.append(f"| {r['name']} | {fmt(r['macdiff_mm'])} | {fmt(r['linear_interp_mm'])} | "
                         f"{fmt(r['mean_pose_mm'])} |")
    return "\n".join(lines) + "\n"


def run_reconstruct(cfg: ReconstructConfig) -> dict:
    """Run the reconstruction table; writes ``results.json``, ``reconstruction.md`` and pictures into
    ``cfg.output``; returns the results dict (rows carry ``macdiff_m``/``_mm`` (the checkpoint's model, whatever
    its method), ``*_native_mm``, baselines, ``num_persons``)."""
    cfg = absolute_paths(cfg, "checkpoint", "data_dir", "output")
    from macdiff_ray.generate.metrics import mpjpe, native_mpjpe
    from macdiff_ray.generate.occlusion import linear_interpolation_fill, mean_pose_fill
    from macdiff_ray.train.checkpoint import code_version

    t_start = time.perf_counter()
    out_dir = Path(cfg.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    bundle, manifest, layout, ckpt_info = load_generator(cfg.checkpoint, cfg.data_dir)
    method, finetuned = ckpt_info["method"], ckpt_info["decoder_finetune"]
    condition = resolve_condition(cfg.condition, method, finetuned)
    if method == "mae" and cfg.recon_guidance:
        raise ConfigError("recon_guidance (--guidance): the mae baseline regresses in one pass; no guidance")
    guidance = 0.0 if method == "mae" else (
        cfg.recon_guidance if cfg.recon_guidance is not None else default_guidance(condition))
    resample = cfg.resample if cfg.resample is not None else default_resample(method)
    if method == "mae" and resample != 1:
        raise ConfigError("resample (--resample): the mae baseline regresses in one pass; no diffusion steps to repeat")
    check_init(cfg.init, cfg.init_strength, method)
    protocol = describe_protocol(method, condition, guidance, finetuned) | {
        "resample": resample, "init": cfg.init, "init_strength": cfg.init_strength}
    stats = bundle["stats"]
    mc = bundle["model_config"]
    T, V, C = int(mc["num_frames"]), int(mc["num_joints"]), int(mc["channels"])
    split = load_split(cfg.data_dir, cfg.benchmark, cfg.split, stats=stats, num_frames=T, crop=cfg.crop,
                       limit=cfg.num_samples, seed=cfg.seed)
    x, where = persons_of(split)  # (P, T, V, C) normalised, (P, 2) (sample, person)
    mean, std = (np.asarray(stats[k], np.float32) for k in ("mean", "std"))  # (C,), (C,)
    x_m = x * std + mean  # (P, T, V, C) metres
    nat = None
    if cfg.native:
        w = native_windows(cfg.data_dir, cfg.benchmark, cfg.split, list(split["sample_id"]), crop=cfg.crop)
        nat = (w["x"][where[:, 0], where[:, 1]], w["start"][where[:, 0]], w["crop_len"][where[:, 0]])
    mean_pose = train_mean_pose(cfg.data_dir, cfg.benchmark, stats=stats, num_frames=T, crop=cfg.crop)  # (V, C)
    rng = np.random.default_rng([int(cfg.seed), 0x0CC])
    specs = occlusion_rows(cfg, layout, x.shape[0], T, V, C, rng)

    def native_mm(fill: np.ndarray, known: np.ndarray) -> tuple[Optional[float], Optional[float]]:
        if nat is None:
            return None, None
        r = native_mpjpe(fill, known, *nat)
        return 1000 * r["mpjpe"], r["occluded_frames"]

    handles = make_workers(bundle, cfg.workers, cfg.cpu_per_worker)
    rows, recons = [], {}
    try:
        for task, (name, known) in enumerate(specs):
            init = (cfg.init, cfg.init_strength) if name.startswith("frames-") else ("noise", 1.0)
            calls = [(x[a : a + cfg.chunk_size], known[a : a + cfg.chunk_size], chunk_seed(cfg.seed, task, j),
                      condition, cfg.steps, resample, cfg.eta, cfg.clip_x0, guidance, *init)
                     for j, a in enumerate(range(0, x.shape[0], cfg.chunk_size))]
            t0 = time.perf_counter()
            rec = np.concatenate(run_chunks(handles, "reconstruct", calls, desc=f"reconstruct {name}"))  # (P, T, V, C)
            gen_s = time.perf_counter() - t0
            if not np.array_equal(rec[known], x[known]):
                raise AssertionError(f"{name}: inpainting changed known entries (bug)")
            rec_m = rec * std + mean  # (P, T, V, C) metres
            err = mpjpe(rec_m, x_m, known_mask=known)
            mp_fill = mean_pose_fill(x_m, known, mean_pose)
            mp = mpjpe(mp_fill, x_m, known_mask=known)
            li_fill = linear_interpolation_fill(x_m, known) if name.startswith("frames-") else None
            li = None if li_fill is None else mpjpe(li_fill, x_m, known_mask=known)
            err_n, frames_n = native_mm(rec_m, known)
            mp_n, _ = native_mm(mp_fill, known)
            li_n = None if li_fill is None else native_mm(li_fill, known)[0]
            rows.append({"name": name, "macdiff_m": err, "macdiff_mm": 1000 * err, "mean_pose_m": mp,
                         "mean_pose_mm": 1000 * mp, "linear_interp_m": li,
                         "linear_interp_mm": None if li is None else 1000 * li,
                         "macdiff_native_mm": err_n, "mean_pose_native_mm": mp_n, "linear_interp_native_mm": li_n,
                         "native_frames_occluded": frames_n if name.startswith("frames-") else None,
                         "occluded_joints": int((~known).all(-1).sum()), "generation_s": gen_s})
            recons[name] = (rec_m, known)
            log.warning("reconstruct %s: %s %.1f mm, mean pose %.1f mm%s (%.1f s)", name, method, 1000 * err,
                        1000 * mp, "" if li is None else f", linear interp {1000 * li:.1f} mm", gen_s)
    finally:
        kill_workers(handles)

    pictures = _render_reconstructions(out_dir / "pictures", layout, x_m, recons, cfg.render, method)
    result = {
        "task": "reconstruct",
        "config": to_dict(cfg),
        "protocol": protocol,
        "checkpoint": ckpt_info,
        "data": data_info(manifest),
        "num_samples": int(split["x"].shape[0]),
        "num_persons": int(x.shape[0]),
        "model_frames": T,
        "rows": rows,
        "pictures": pictures,
        "wall_time_s": time.perf_counter() - t_start,
        "code_version": code_version(),
    }
    (out_dir / "reconstruction.md").write_text(reconstruction_markdown(result))
    write_json(out_dir / "results.json", result)
    return result


def _render_reconstructions(folder: Path, layout: Any, truth: np.ndarray, recons: Mapping[str, tuple],
                            count: int, method: str = "macdiff") -> list[str]:
    """Per row: a grid (occluded input / reconstruction over the ground truth) for the first ``count`` persons and
    a GIF of the first one."""
    from macdiff_ray.viz.render import render_gif, render_grid

    paths: list[str] = []
    if count == 0:
        return paths
    name_of = {"macdiff": "MacDiff", "ddim": "DDIM", "mdm": "MDM", "mae": "MAE"}.get(method, method)
    for name, (rec, known) in recons.items():
        seqs, labels, overlays, highlights = [], [], [], []
        for i in range(min(count, truth.shape[0])):
            occluded = ~known[i]  # (T, V, C)
            seqs += [truth[i], rec[i]]
            labels += [f"person {i}: ground truth (occluded: ringed, whole frames boxed)",
                       f"person {i}: {name_of} ({name}) over truth"]
            overlays += [None, truth[i]]
            highlights += [occluded, occluded]
        paths.append(str(render_grid(seqs, labels, layout, folder / f"reconstruct_{name}.png",
                                     overlays=overlays, highlights=highlights)))
        paths.append(str(render_gif(rec[0], layout, folder / f"reconstruct_{name}.gif", overlay=truth[0],
                                    highlight=~known[0], title=f"{name_of} {name}")))
    return paths
