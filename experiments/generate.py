"""Generative tasks of MacDiff (paper Sec. 4.4): reconstruction of occluded motion, unconditional generation, pictures.

    python experiments/generate.py reconstruct --checkpoint CKPT --data DIR --benchmark B --output OUT \
        [--split test] [--num-samples N (0 = all)] [--frames 10,20,40] [--parts trunk,left_arm,...] \
        [--condition auto|global|global-all|visible|visible-all|zeroed|none] [--guidance W] [--steps 50] \
        [--resample 5] [--init noise|interpolation --init-strength S] [--eta 1.0] [--no-native] [--workers K] [--seed S]
    python experiments/generate.py sample --checkpoint CKPT --data DIR --benchmark B --output OUT \
        [--classifier FINETUNE_CKPT] [--feature pooled|penultimate] [--num-samples 256] [--num-real 0] \
        [--steps 50] [--eta 1.0] [--workers K] [--seed S]
    python experiments/generate.py render --data DIR --output OUT [--benchmark B --split test | --samples NPY] \
        [--num-samples 4]

``reconstruct`` writes OUT/results.json, OUT/reconstruction.md (MPJPE in mm at the model's frames and at the
data's own frames: the model's reconstruction, linear interpolation, training mean pose) and OUT/pictures/. Its
protocol follows the checkpoint (``--condition auto``, ``--guidance`` unset): a decoder fine-tuned by
``finetune_decoder.py`` runs the paper's (global condition, RePaint-style inpainting, no guidance); a MacDiff
pretraining checkpoint the ``visible`` condition with reconstruction guidance; ddim / mdm unconditional
inpainting; mae its regression (mamp cannot reconstruct). The table names the protocol. ``sample`` writes OUT/results.json, OUT/generation.md (FID,
KID, diversity, precision/recall incl. the real-vs-real reference row), OUT/samples.npy (metres) and
OUT/pictures/. Without ``--classifier`` the features come from the generator checkpoint's own encoder, a
labelled FALLBACK. ``--workers K`` spreads generation over K Ray actors (0: in this process); without RAY_ADDRESS
a local Ray is started. ``--smoke-test``: synthetic data and an UNTRAINED tiny checkpoint in a temp dir (seconds;
checks the plumbing, the numbers mean nothing).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from macdiff_ray.cli import parser  # noqa: E402
from macdiff_ray.generate import (  # noqa: E402
    CLIP_X0, CONDITIONS, INITS, RECON_GUIDANCE, RESAMPLE, SAMPLE_ETA, ReconstructConfig, SampleConfig, config_from_args,
    render_sequences, run_reconstruct, run_sample,
)


def _ints(s: str) -> list[int]:
    return [int(v) for v in s.split(",") if v.strip()]


def _names(s: str) -> list[str]:
    return [v.strip() for v in s.split(",") if v.strip()]


def parse_args(argv=None) -> argparse.Namespace:
    p = parser(__doc__.split("\n\n")[0],
               'python experiments/generate.py reconstruct --checkpoint runs/quickstart/pretrain --data runs/quickstart/data --benchmark synthetic --num-samples 32 --workers 0 --output runs/rec',
               'OUT/results.json, OUT/reconstruction.md or generation.md (the tables), OUT/samples.npy (sample), OUT/pictures/ (PNG strips and GIFs)')
    sub = p.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data", dest="data_dir", help="prepared dataset directory")
    common.add_argument("--benchmark", help="e.g. ucla-xview, ntu60-xsub")
    common.add_argument("--split", default="test", choices=("train", "test"))
    common.add_argument("--output", help="output folder")
    common.add_argument("--seed", type=int, default=0)
    common.add_argument("--smoke-test", action="store_true", help="synthetic data + untrained tiny checkpoint")
    model = argparse.ArgumentParser(add_help=False)
    model.add_argument("--checkpoint", help="pretraining checkpoint dir, checkpoint.pt or run dir")
    model.add_argument("--steps", type=int, default=50, help="DDIM steps")
    model.add_argument("--clip-x0", dest="clip_x0", type=float, default=CLIP_X0,
                       help="clamp of the predicted x0 in normalised units during sampling (<= 0: off)")
    model.add_argument("--workers", type=int, default=1, help="Ray actors K (0: in this process)")
    model.add_argument("--chunk-size", dest="chunk_size", type=int, default=32, help="sequences per actor call")
    model.add_argument("--render", type=int, default=None, help="examples to draw (0: no pictures)")

    r = sub.add_parser("reconstruct", parents=[common, model], help="occluded motion reconstruction (Table 5)")
    r.add_argument("--num-samples", dest="num_samples", type=int, default=0, help="split samples (0 = all)")
    r.add_argument("--frames", type=_ints, default=[10, 20, 40], help="occluded frame counts, comma-separated")
    r.add_argument("--parts", type=_names, default=["trunk", "left_arm", "right_arm", "left_leg", "right_leg"])
    r.add_argument("--condition", default="auto", choices=CONDITIONS,
                   help="decoder condition: auto (default: the checkpoint's protocol), global (z_global of a fresh "
                        "pretraining-sized draw of the observed tokens: a fine-tuned decoder), global-all, visible "
                        "(that draw as z_local + z_global: a pretraining checkpoint), visible-all (every observed "
                        "token), zeroed (the zero-filled input), none (z dropped)")
    r.add_argument("--guidance", dest="recon_guidance", type=float, default=None,
                   help=f"reconstruction-guidance weight (0: plain RePaint replacement; default {RECON_GUIDANCE:g} "
                        "under the visible condition, else 0)")
    r.add_argument("--no-native", dest="native", action="store_false",
                   help="skip the MPJPE on the data's own frames")
    r.add_argument("--resample", type=int, default=None,
                   help=f"RePaint resampling per DDIM step (default {RESAMPLE} for the diffusion models, 1 for mae)")
    r.add_argument("--init", default="noise", choices=INITS,
                   help="where each frame row's chain starts: noise (RePaint, the paper's), or interpolation "
                        "(SDEdit from the linear interpolation of the gap; part rows start from noise)")
    r.add_argument("--init-strength", dest="init_strength", type=float, default=1.0,
                   help="with --init interpolation: the fraction of the chain run, 0 < S < 1")
    r.add_argument("--eta", type=float, default=1.0, help="DDIM eta of the inpainting steps")

    s = sub.add_parser("sample", parents=[common, model], help="unconditional generation (Table 6)")
    s.add_argument("--num-samples", dest="num_samples", type=int, default=256, help="generated sequences")
    s.add_argument("--num-real", dest="num_real", type=int, default=0, help="real samples of the split (0 = all)")
    s.add_argument("--classifier", default="", help="fine-tuned classifier checkpoint for the features")
    s.add_argument("--feature", default="pooled", choices=("pooled", "penultimate"))
    s.add_argument("--eta", type=float, default=SAMPLE_ETA, help="DDIM eta (0: deterministic DDIM, 1: stochastic)")

    v = sub.add_parser("render", parents=[common], help="PNG strips + GIFs of real or generated sequences")
    v.add_argument("--samples", default=None, help="samples.npy from 'sample' (else real sequences)")
    v.add_argument("--num-samples", dest="num_samples", type=int, default=4)
    v.add_argument("--num-frames", dest="num_frames", type=int, default=120)
    args = p.parse_args(argv)
    if not args.smoke_test:
        need = ["data_dir", "output"] + (["checkpoint", "benchmark"] if args.command != "render" else [])
        missing = [f"--{k.replace('_dir', '').replace('_', '-')}" for k in need if getattr(args, k) is None]
        if missing:
            p.error(f"missing {', '.join(missing)} (or use --smoke-test)")
    return args


def _smoke(args: argparse.Namespace) -> None:
    """Synthetic data and an untrained tiny checkpoint (T0 = 16 frames) in a temp dir."""
    from macdiff_ray.augment.offline import save_random_checkpoint
    from macdiff_ray.cli import smoke_dataset

    tmp = Path(tempfile.mkdtemp(prefix="macdiff_generate_smoke_"))
    if args.data_dir is None:
        args.data_dir = smoke_dataset(num_samples=64)
        args.benchmark = "synthetic"
    if getattr(args, "checkpoint", "x") is None:
        args.checkpoint = str(save_random_checkpoint(args.data_dir, args.benchmark, tmp / "ckpt"))
    args.output = args.output or str(tmp / args.command)
    if args.command == "reconstruct":
        args.frames = [f for f in args.frames if f < 16] or [4, 8]
        args.num_samples = args.num_samples or 8
    if args.command == "sample":
        args.num_samples = min(args.num_samples, 16)
    if args.command == "render":
        args.num_frames = 16
    if hasattr(args, "steps"):
        args.steps = min(args.steps, 5)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.smoke_test:
        _smoke(args)
    if args.command == "render":
        paths = render_sequences(args.data_dir, args.output, benchmark=args.benchmark, split=args.split,
                                 count=args.num_samples, seed=args.seed, samples=args.samples,
                                 num_frames=args.num_frames)
        summary = {"pictures": paths}
        print(json.dumps(summary, indent=2))
        return summary
    if args.workers > 0:
        from macdiff_ray.train.runtime import init_ray

        init_ray(quiet=True)
    keys = ["checkpoint", "data_dir", "benchmark", "output", "split", "steps", "workers", "chunk_size", "seed",
            "num_samples", "eta"]
    if args.command == "reconstruct":
        keys += ["frames", "parts", "condition", "resample", "recon_guidance", "init", "init_strength", "native"]
        cls, run, table = ReconstructConfig, run_reconstruct, "reconstruction.md"
    else:
        keys += ["classifier", "feature", "num_real"]
        cls, run, table = SampleConfig, run_sample, "generation.md"
    values = {k: getattr(args, k) for k in keys}
    if args.render is not None:
        values["render"] = args.render
    values["clip_x0"] = args.clip_x0 if args.clip_x0 > 0 else None
    result = run(config_from_args(cls, values))
    print((Path(args.output) / table).read_text())
    print(json.dumps({"output": args.output, "wall_time_s": round(result["wall_time_s"], 2)}, indent=2))
    return result


if __name__ == "__main__":
    main()
