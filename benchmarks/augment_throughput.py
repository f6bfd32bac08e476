"""Augmentation throughput and trainer stall (figures, not a test).

    python benchmarks/augment_throughput.py [--data DIR --benchmark B] [--preset tiny] [--num-frames 120]
        [--sources 64] [--ratio 2.0] [--epochs 3] [--train-seconds 0.5] [--actors 1 2] [--t-start 500]

For each K in --actors: a pool of K actors (0.5 CPU each, a GPU share where GPUs exist) serves an UNTRAINED
model of the preset (throughput does not depend on the weights).
1. samples/s: one epoch of round(ratio x sources) samples, from prefetch to the last chunk received (warm actors:
   epoch 0 is run first and not counted).
2. stall: a simulated fine-tuning loop (prefetch(0); per epoch prefetch(e+1), collect(e), then "train" for
   --train-seconds by sleeping, which leaves the CPUs to the actors as a real trainer on a GPU would not) prints
   the fraction of each epoch spent waiting in collect.
Synthetic data in a temp dir when --data is absent.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from macdiff_ray.augment import build_augmenter, save_random_checkpoint  # noqa: E402
from macdiff_ray.train.runtime import init_ray  # noqa: E402


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", dest="data_dir")
    p.add_argument("--benchmark")
    p.add_argument("--preset", default="tiny", choices=("paper", "small", "tiny"))
    p.add_argument("--num-frames", type=int, default=120)
    p.add_argument("--sources", type=int, default=64, help="labelled source samples (first N training rows)")
    p.add_argument("--ratio", type=float, default=2.0)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--train-seconds", type=float, default=0.5)
    p.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    p.add_argument("--t-start", type=int, default=500)
    p.add_argument("--chunk-size", type=int, default=16)
    p.add_argument("--cpu-per-actor", type=float, default=0.5)
    p.add_argument("--condition", nargs="+", default=["masked", "full"], choices=("masked", "full"),
                   help="decoder conditions to time (masked: 2 decoder passes per sample, full: 1)")
    args = p.parse_args(argv)

    init_ray(quiet=True)
    import ray
    import torch

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="macdiff_augbench_"))
    if args.data_dir is None:
        from macdiff_ray.data.prepare import prepare_dataset

        args.data_dir, args.benchmark = str(tmp / "synthetic"), "synthetic"
        prepare_dataset("synthetic", None, args.data_dir, progress=False,
                        synthetic_options={"num_samples": max(2 * args.sources, 64), "num_classes": 4, "seed": 0})
    ckpt = save_random_checkpoint(args.data_dir, args.benchmark, tmp / "ckpt", preset=args.preset,
                                  num_frames=args.num_frames)
    print(f"ray resources: {ray.cluster_resources()}", flush=True)
    rows = []
    for condition, k in [(c, k) for c in args.condition for k in args.actors]:
        aug = build_augmenter(ckpt, args.data_dir, args.benchmark, list(range(args.sources)), args.t_start,
                              args.ratio, k, 0, chunk_size=args.chunk_size, cpu_per_actor=args.cpu_per_actor,
                              condition=condition)
        try:
            info = aug.pool.actor_info()
            aug.collect(0)  # warm-up (actor start, first forward)
            t0 = time.perf_counter()
            n = aug.collect(1)["x"].shape[0]
            rate = n / (time.perf_counter() - t0)
            stalls = []
            aug.prefetch(2)
            for e in range(2, 2 + args.epochs):
                t_epoch = time.perf_counter()
                aug.prefetch(e + 1)
                before = aug.wait_seconds
                aug.collect(e)
                waited = aug.wait_seconds - before
                time.sleep(args.train_seconds)  # the trainer's work on epoch e
                stalls.append(waited / (time.perf_counter() - t_epoch))
            row = {"condition": condition, "actors": k, "device": info[0]["device"], "samples_per_epoch": n,
                   "samples_per_s": round(rate, 1), "stall_fraction_per_epoch": [round(s, 3) for s in stalls],
                   "train_seconds": args.train_seconds, "preset": args.preset, "num_frames": args.num_frames}
        finally:
            aug.shutdown()
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


if __name__ == "__main__":
    main()
