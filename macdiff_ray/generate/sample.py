"""The generation driver (paper Sec. 4.4, Table 6): unconditional samples scored against the real split.

:func:`run_sample`: ``num_samples`` single-person sequences by DDIM from pure noise with z dropped (``steps``,
``eta``, default 1: stochastic, see :data:`sampling.SAMPLE_ETA`). A MacDiff pretraining checkpoint, a fine-tuned
decoder (Table 6 "+ fine-tune") and the decoder-only baselines (ddim, mdm) sample; mae and mamp cannot (no
diffusion). Features of the generated set and of the real split (the first person of each sample, the same
EvalTransform) come from :mod:`macdiff_ray.generate.features`. Table rows: generated vs all real, generated (a
draw of at most |B| samples) vs real half B, and the reference row real half A vs real half B (two disjoint seeded
halves), as in the paper's Table 6.

Outputs under ``output``: ``results.json``, ``generation.md``, ``samples.npy`` (metres) and pictures under
``pictures/``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from macdiff_ray.config import ConfigError, absolute_paths, to_dict
from macdiff_ray.generate.common import CLIP_X0, check_common, chunk_seed, data_info, load_generator, write_json
from macdiff_ray.generate.data import load_split
from macdiff_ray.generate.sampling import SAMPLE_ETA
from macdiff_ray.generate.workers import kill_workers, make_workers, run_chunks

__all__ = ["SampleConfig", "generation_markdown", "run_sample"]

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
        from macdiff_ray.generate.features import FEATURE_KINDS

        check_common(self, "SampleConfig")
        if self.feature not in FEATURE_KINDS:
            raise ConfigError(f"SampleConfig.feature: {self.feature!r} is not one of {list(FEATURE_KINDS)}")
        if self.num_samples < self.k + 1:
            raise ConfigError(f"SampleConfig.num_samples (--num-samples): need more than k={self.k} samples for "
                              f"precision/recall, got {self.num_samples}")
        if self.num_real < 0:
            raise ConfigError(f"SampleConfig.num_real: expected >= 0 (0 = all), got {self.num_real}")
        if self.kid_subsets < 1 or self.kid_subset_size < 2 or self.diversity_pairs < 1 or self.k < 1:
            raise ConfigError("SampleConfig: kid_subsets >= 1, kid_subset_size >= 2, diversity_pairs >= 1, k >= 1")


def generation_markdown(result: Mapping[str, Any]) -> str:
    """The Table-6-style markdown table of :func:`run_sample`'s result."""
    c = result["config"]
    feats = result["features"]
    warn = (" **FALLBACK: features from the pretraining encoder, NOT a trained action classifier.**"
            if feats["fallback"] else "")
    lines = [
        f"Unconditional generation on {result['data']['dataset']} {c['benchmark']}/{c['split']}: "
        f"{c['num_samples']} DDIM samples ({c['steps']} steps, eta {c['eta']}, z dropped); generator "
        f"{_generator_label(result['checkpoint'])}, checkpoint "
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


def _generator_label(info: Mapping[str, Any]) -> str:
    """``macdiff`` / ``macdiff + fine-tuned decoder`` / ``ddim`` / ``mdm`` (prediction target in the results)."""
    method = info.get("method", "macdiff")
    return f"{method} + fine-tuned decoder" if info.get("decoder_finetune") else method


def run_sample(cfg: SampleConfig) -> dict:
    """Generate, featurise and score; writes ``results.json``, ``generation.md``, ``samples.npy`` (metres) and
    pictures into ``cfg.output``; returns the results dict."""
    cfg = absolute_paths(cfg, "checkpoint", "data_dir", "output", "classifier")
    from macdiff_ray.generate.features import load_feature_extractor
    from macdiff_ray.generate.metrics import generation_metrics
    from macdiff_ray.train.checkpoint import code_version

    t_start = time.perf_counter()
    out_dir = Path(cfg.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    bundle, manifest, layout, ckpt_info = load_generator(cfg.checkpoint, cfg.data_dir)
    if ckpt_info["method"] in ("mae", "mamp"):
        raise ConfigError(f"{cfg.checkpoint}: method {ckpt_info['method']!r} regresses its target without diffusion "
                          "and cannot generate (paper Sec. 4.4); sample from a macdiff, ddim or mdm checkpoint")
    stats = bundle["stats"]
    T = int(bundle["model_config"]["num_frames"])
    if not cfg.classifier and ckpt_info["method"] in ("ddim", "mdm"):
        raise ConfigError(f"{cfg.checkpoint}: a {ckpt_info['method']} generator has no encoder to take fallback "
                          "features from; give --classifier (a fine-tuned classifier checkpoint)")
    extractor = load_feature_extractor(cfg.classifier or cfg.checkpoint, kind=cfg.feature)
    if extractor.layout_name is not None and extractor.layout_name != layout.name:
        raise ConfigError(f"classifier {extractor.checkpoint}: layout {extractor.layout_name!r} differs from the "
                          f"data's {layout.name!r}")

    handles = make_workers(bundle, cfg.workers, cfg.cpu_per_worker)
    try:
        sizes = [min(cfg.chunk_size, cfg.num_samples - a) for a in range(0, cfg.num_samples, cfg.chunk_size)]
        calls = [(n, chunk_seed(cfg.seed, 0, j), cfg.steps, cfg.eta, cfg.clip_x0) for j, n in enumerate(sizes)]
        t0 = time.perf_counter()
        fake = np.concatenate(run_chunks(handles, "sample", calls, desc="generate"))  # (S, T, V, C) normalised
        gen_s = time.perf_counter() - t0
    finally:
        kill_workers(handles)
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
        "data": data_info(manifest),
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
    write_json(out_dir / "results.json", result)
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


