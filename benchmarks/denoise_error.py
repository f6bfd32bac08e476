"""One-step denoising error of a checkpoint's decoder at several timesteps, on fully observed sequences.

    python benchmarks/denoise_error.py --checkpoint runs/ucla_tiny32_35_decft --data prepared/ucla \
        --benchmark ucla-xview [--condition global] [--num-samples 128] [--timesteps 1,5,20,50,100,300,600,900]

Per timestep t: the split's sequences (the checkpoint's normalisation, ``EvalTransform``) are noised with
``q_sample`` at t; the decoder (under ``--condition``, every token observed) predicts, and its x0 estimate is scored
against the clean sequence. Prints alpha_bar(t), the MPJPE (mm) of the noisy input scaled back (x_t / sqrt(alpha_bar))
and of the x0 estimate, and the eps MSE (eps-predicting decoders). It shows the floor a schedule sets on
reconstruction: the paper's inverse-cosine keeps alpha_bar 0.998 at t = 0. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--benchmark", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--condition", default="global", help="a reconstruction condition the checkpoint takes")
    p.add_argument("--num-samples", type=int, default=128)
    p.add_argument("--timesteps", default="1,5,20,50,100,300,600,900")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    from macdiff_ray.augment.pool import load_frozen_model
    from macdiff_ray.diffusion.gaussian import extract, q_sample
    from macdiff_ray.generate.common import load_generator
    from macdiff_ray.generate.data import load_split, persons_of
    from macdiff_ray.generate.inpainting import _condition_groups, resolve_condition

    torch.set_num_threads(args.threads)
    bundle, _, _, info = load_generator(args.checkpoint, args.data)
    cond = resolve_condition(args.condition, info["method"], info["decoder_finetune"])
    model, schedule, _ = load_frozen_model(bundle, args.threads)
    if not model.cfg.is_diffusion:
        p.error(f"{args.checkpoint}: method {info['method']!r} has no diffusion decoder")
    stats, T = bundle["stats"], int(bundle["model_config"]["num_frames"])
    split = load_split(args.data, args.benchmark, args.split, stats=stats, num_frames=T, limit=args.num_samples,
                       seed=args.seed)
    x = torch.from_numpy(persons_of(split)[0])  # (P, T, V, C) normalised
    std = np.asarray(stats["std"], np.float32)  # (C,)
    g = torch.Generator().manual_seed(args.seed)
    (_, cond_fn, _), = _condition_groups(model, x, torch.ones_like(x, dtype=torch.bool), cond, g)

    def mm(a: torch.Tensor) -> float:  # MPJPE against x, in mm
        return 1000 * float(np.linalg.norm((a - x).numpy() * std, axis=-1).mean())

    rows = []
    print(f"{args.checkpoint} ({info['method']}, condition {cond}, schedule {bundle['diffusion'].get('schedule')}), "
          f"{x.shape[0]} persons of {args.benchmark}/{args.split}")
    for t in (int(v) for v in args.timesteps.split(",") if v.strip()):
        tt = torch.full((x.shape[0],), t, dtype=torch.long)
        noise = torch.randn(x.shape, generator=g)
        x_t = q_sample(schedule, x, tt, noise)
        ab = extract(schedule.alphas_cumprod, tt, x)
        with torch.no_grad():
            out = model.denoise(x_t, tt, *cond_fn()).float()
        eps = model.cfg.target == "eps"
        x0 = (x_t - (1 - ab).sqrt() * out) / ab.sqrt() if eps else out
        row = {"t": t, "alpha_bar": float(ab.flatten()[0]), "noisy_mm": mm(x_t / ab.sqrt()), "x0_mm": mm(x0),
               "eps_mse": float(((out - noise) ** 2).mean()) if eps else None}
        rows.append(row)
        print(f"t {t:4d}  alpha_bar {row['alpha_bar']:.5f}  noisy {row['noisy_mm']:7.1f} mm  x0 estimate "
              f"{row['x0_mm']:6.1f} mm" + (f"  eps MSE {row['eps_mse']:.3f}" if eps else ""))
    return rows


if __name__ == "__main__":
    main()
