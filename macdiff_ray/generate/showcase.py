"""One picture of what a pretrained MacDiff does (the quickstart's): a real test sequence, its reconstruction from a
copy with a block of frames occluded, and an unconditional sample.

It reuses the generative drivers' pieces (:mod:`macdiff_ray.generate`): the same frozen-model worker, the
same reconstruction (``visible`` condition, reconstruction guidance, DDIM with eta 1) and sampling defaults, in
this process (no Ray actors: one sequence). The MPJPE of the occluded frames is measured against the truth and
against linear interpolation, so the caption states what the picture shows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch


def render_showcase(checkpoint: str, data_dir: str, benchmark: str, path: str | Path, *, occluded_frames: int = 20,
                    steps: int = 25, seed: int = 0) -> dict[str, Any]:
    """Write the PNG at ``path``; returns ``{path, sample_id, occluded_frames, steps, macdiff_mm,
    linear_interp_mm}`` (MPJPE over the occluded frames, millimetres)."""
    from macdiff_ray.generate.common import load_generator
    from macdiff_ray.generate.data import load_split, persons_of
    from macdiff_ray.generate.inpainting import RECON_GUIDANCE
    from macdiff_ray.generate.metrics import mpjpe
    from macdiff_ray.generate.occlusion import frame_occlusion_mask, linear_interpolation_fill
    from macdiff_ray.generate.sampling import SAMPLE_ETA
    from macdiff_ray.generate.workers import GenerativeWorker
    from macdiff_ray.viz.render import render_grid

    bundle, _, layout, _ = load_generator(checkpoint, data_dir)
    worker = GenerativeWorker(bundle, num_threads=torch.get_num_threads())
    stats, mc = bundle["stats"], bundle["model_config"]
    T, V, C = int(mc["num_frames"]), int(mc["num_joints"]), int(mc["channels"])
    if not 1 <= occluded_frames < T:
        raise ValueError(f"occluded_frames: {occluded_frames} must be in [1, {T})")
    split = load_split(data_dir, benchmark, "test", stats=stats, num_frames=T, limit=1, seed=seed)
    x = persons_of(split)[0][:1]  # (1, T, V, C) normalised, the first present person
    known = frame_occlusion_mask(T, V, C, occluded_frames, (T - occluded_frames) // 2)[None]  # (1, T, V, C)
    rec = worker.reconstruct(x, known, seed, "visible", steps, 1, SAMPLE_ETA,
                             recon_guidance=RECON_GUIDANCE)  # (1, T, V, C)
    gen = worker.sample(1, seed + 1, steps, SAMPLE_ETA)  # (1, T, V, C)
    mean, std = (np.asarray(stats[k], np.float32) for k in ("mean", "std"))  # (C,), (C,)
    x_m, rec_m, gen_m = (a * std + mean for a in (x, rec, gen))  # (1, T, V, C) metres
    err = 1000 * mpjpe(rec_m, x_m, known_mask=known)
    lin = 1000 * mpjpe(linear_interpolation_fill(x_m, known), x_m, known_mask=known)
    occluded = ~known[0]  # (T, V, C)
    labels = [f"real test sequence ({split['sample_id'][0]}); the {occluded_frames} occluded frames are boxed",
              f"MacDiff reconstruction of the boxed frames over the truth (grey): {err:.0f} mm "
              f"(linear interpolation {lin:.0f} mm)",
              f"MacDiff unconditional sample (DDIM, {steps} steps)"]
    # Each row at its own scale: a poor sample (a short quickstart) would otherwise shrink the real body to a dot.
    out = render_grid([x_m[0], rec_m[0], gen_m[0]], labels, layout, path,
                      overlays=[None, x_m[0], None], highlights=[occluded, occluded, None], shared_scale=False)
    return {"path": str(out), "sample_id": str(split["sample_id"][0]), "occluded_frames": occluded_frames,
            "steps": steps, "macdiff_mm": float(err), "linear_interp_mm": float(lin)}
