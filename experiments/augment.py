"""Write diffusion-augmented samples of a labelled subset as a prepared dataset (paper Sec. 3.4, offline).

    python experiments/augment.py --checkpoint CKPT --data DIR --benchmark B --output OUT_DIR \
        [--labeled-fraction p] [--subset-seed S] [--t-start 500] [--ratio L] [--epochs E] [--actors K] \
        [--condition masked|full] [--seed S] [--overwrite] [--smoke-test]

OUT_DIR is an ordinary prepared dataset (``source_format: augmented``; manifest records source, checkpoint,
t_s, ratio), loadable with ``make_dataset(OUT_DIR, B, "train", ...)``. Without RAY_ADDRESS a local Ray is
started. ``--smoke-test``: synthetic data and an UNTRAINED tiny checkpoint in a temp dir (seconds; checks the
plumbing, the samples mean nothing).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from macdiff_ray.augment import save_random_checkpoint, write_augmented_dataset  # noqa: E402
from macdiff_ray.cli import parser  # noqa: E402
from macdiff_ray.train.runtime import init_ray  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = parser(__doc__.split("\n\n")[0],
               'python experiments/augment.py --checkpoint runs/quickstart/pretrain --data runs/quickstart/data --benchmark synthetic --labeled-fraction 0.1 --ratio 1.0 --actors 1 --output runs/augmented',
               'OUT_DIR/manifest.json and OUT_DIR/shards/ (a prepared dataset of the real subset plus generated samples; the manifest records source, checkpoint, t_s and ratio)')
    p.add_argument("--checkpoint", help="pretraining checkpoint dir, checkpoint.pt or run dir")
    p.add_argument("--data", dest="data_dir", help="prepared source dataset")
    p.add_argument("--benchmark", help="e.g. ntu60-xsub, ucla-xview")
    p.add_argument("--output", help="output folder (a new prepared dataset)")
    p.add_argument("--labeled-fraction", dest="labeled_fraction", type=float, default=None,
                   help="class-stratified labelled subset of the training split (default: all of it)")
    p.add_argument("--subset-seed", dest="subset_seed", type=int, default=0)
    p.add_argument("--t-start", dest="t_start", type=int, default=500, help="t_s (paper default 500)")
    p.add_argument("--ratio", type=float, default=1.0, help="lambda: augmented samples per source per epoch")
    p.add_argument("--epochs", type=int, default=1, help="independent draws (fresh noise) to write")
    p.add_argument("--actors", type=int, default=1, help="augmentation actors K")
    p.add_argument("--condition", default="masked", choices=("masked", "full"),
                   help="decoder condition: pretraining masks (default) or all tokens (the paper's recipe)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--smoke-test", action="store_true", help="synthetic data + untrained tiny checkpoint")
    args = p.parse_args(argv)
    if not args.smoke_test:
        missing = [f"--{k.replace('_', '-')}" for k in ("checkpoint", "data_dir", "benchmark", "output")
                   if getattr(args, k) is None]
        if missing:
            p.error(f"missing {', '.join(missing)} (or use --smoke-test)")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    init_ray(quiet=True)
    if args.smoke_test:
        from macdiff_ray.cli import smoke_dataset

        tmp = Path(tempfile.mkdtemp(prefix="macdiff_augment_smoke_"))
        if args.data_dir is None:
            args.data_dir = smoke_dataset()
            args.benchmark = "synthetic"
        if args.checkpoint is None:
            args.checkpoint = str(save_random_checkpoint(args.data_dir, args.benchmark, tmp / "ckpt"))
        args.output = args.output or str(tmp / "augmented")
        if args.labeled_fraction is None:
            args.labeled_fraction = 0.25
    manifest = write_augmented_dataset(
        args.checkpoint, args.data_dir, args.benchmark, args.output, labeled_fraction=args.labeled_fraction,
        subset_seed=args.subset_seed, t_start=args.t_start, ratio=args.ratio, epochs=args.epochs,
        num_actors=args.actors, seed=args.seed, overwrite=args.overwrite, condition=args.condition,
    )
    summary = {"output": args.output, "num_samples": manifest["num_samples"],
               "num_sources": manifest["augmentation"]["num_sources"],
               "wait_seconds": manifest["augmentation"]["wait_seconds"]}
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
