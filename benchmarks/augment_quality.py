"""How far one-step diffusion augmentation moves a sequence from its source (figures, not a test).

    python benchmarks/augment_quality.py --checkpoint RUN --data DIR --benchmark B [--labeled-fraction 0.05]
        [--t-start 1 100 300 500] [--condition masked full] [--seed 123]

The labelled sources (the fraction's class-stratified subset, subset seed 0, as the semi-supervised rows draw
it) are cropped and rotated by the training transform with one seed. Then, for each t_s and decoder condition, the
same transformed rows are noised to t_s and denoised in one step, in this process (no Ray). Printed per row:
- rms(aug - source): the change the augmentation makes, in normalised units;
- rms(aug): the augmented data's own scale;
- jitter: the rms of the frame-to-frame second difference, which measures smoothing.
The first line gives the sources' own rms and jitter.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from macdiff_ray.augment.pool import AugmentWorker, load_sources, model_bundle  # noqa: E402
from macdiff_ray.train.checkpoint import load_checkpoint  # noqa: E402


def jitter(x: np.ndarray) -> float:
    """rms of the second temporal difference of x (N, M, T, V, C)."""
    return float(np.sqrt(((x[:, :, 2:] - 2 * x[:, :, 1:-1] + x[:, :, :-2]) ** 2).mean()))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="pretraining run dir, checkpoint dir or .pt (MacDiff)")
    p.add_argument("--data", required=True, help="the prepared dataset")
    p.add_argument("--benchmark", required=True)
    p.add_argument("--labeled-fraction", type=float, default=0.05)
    p.add_argument("--t-start", type=int, nargs="+", default=[1, 100, 300, 500])
    p.add_argument("--condition", nargs="+", choices=("masked", "full"), default=["masked", "full"])
    p.add_argument("--seed", type=int, default=123, help="seed of the crops, rotations and noise")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    bundle = model_bundle(load_checkpoint(a.checkpoint))
    num_frames = int(bundle["model_config"]["num_frames"])
    src = load_sources(a.data, a.benchmark, num_frames=num_frames, labeled_fraction=a.labeled_fraction, subset_seed=0)
    rows = np.arange(len(src))
    base = AugmentWorker(bundle, 0, src.stats, a.threads, "masked", src.train_transform)
    ref = base.augment(src.x, src.person_valid, rows, a.seed, src.raw)  # t_s 0: the transformed sources themselves
    print(f"{len(src)} sources, {num_frames} frames: rms {np.sqrt((ref ** 2).mean()):.3f}, jitter {jitter(ref):.4f}")
    for cond in a.condition:
        for t in a.t_start:
            w = AugmentWorker(bundle, t, src.stats, a.threads, cond, src.train_transform)
            out = w.augment(src.x, src.person_valid, rows, a.seed, src.raw)
            err = float(np.sqrt(((out - ref) ** 2).mean()))
            print(f"condition {cond:6s} t_s {t:3d}: rms(aug - source) {err:.3f}, rms {np.sqrt((out ** 2).mean()):.3f}, "
                  f"jitter {jitter(out):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
