"""Throughput of the Ray Data training pipeline (read -> split filter -> TrainTransform -> torch batches).

Prints measured samples/s: one warm-up pass, then ``--epochs`` timed passes of ``iter_torch`` with training
transforms on, for the streaming pipeline and for ``materialize=True``, on a local Ray with ``--num-cpus`` CPUs.
Also prints the in-process transform throughput on one core for reference.

    python benchmarks/data_pipeline.py                      # prepares NW-UCLA into a temp dir first
    python benchmarks/data_pipeline.py --data DIR --benchmark ucla-xview
    python benchmarks/data_pipeline.py --smoke-test         # synthetic data, seconds
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np  # noqa: E402
import torch  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, help="prepared dataset dir (default: prepare NW-UCLA into a temp dir)")
    p.add_argument("--source", type=Path, default=REPO.parent / "shared" / "data" / "nw_ucla" / "all_sqe",
                   help="NW-UCLA all_sqe folder used when --data is not given")
    p.add_argument("--benchmark", default="ucla-xview")
    p.add_argument("--split", default="train", choices=["train", "test"])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=3, help="timed passes after one warm-up pass")
    p.add_argument("--num-cpus", type=int, default=2)
    p.add_argument("--mode", choices=["stream", "materialize", "both"], default="both")
    p.add_argument("--smoke-test", action="store_true", help="synthetic data, one timed pass")
    return p.parse_args(argv)


def transform_throughput(data_dir: Path, benchmark: str, split: str, batch_size: int) -> float:
    """Samples/s of TrainTransform alone, in this process, one thread, on batches already in memory."""
    from macdiff_ray.data.benchmarks import read_split
    from macdiff_ray.data.pipeline import dataset_stats
    from macdiff_ray.data.transforms import TrainTransform, decode_batch

    table = read_split(data_dir, benchmark, split)
    data = decode_batch(table)
    n = min(batch_size, len(data["label"]))
    batch = {k: v[:n] for k, v in data.items()}
    tf = TrainTransform(dataset_stats(data_dir, benchmark), seed=0)
    tf(batch)
    reps, t0 = 20, time.perf_counter()
    for _ in range(reps):
        tf(batch)
    return reps * n / (time.perf_counter() - t0)


def time_pipeline(data_dir: Path, args: argparse.Namespace, materialize: bool) -> list[float]:
    from macdiff_ray.data.pipeline import iter_torch, make_dataset

    t0 = time.perf_counter()
    ds = make_dataset(data_dir, args.benchmark, args.split, train=True, seed=0, materialize=materialize)
    build_s = time.perf_counter() - t0
    rates = []
    for epoch in range(1 + args.epochs):
        t0, n = time.perf_counter(), 0
        for batch in iter_torch(ds, args.batch_size, shuffle=True, seed=epoch, drop_last=False):
            n += int(batch["label"].shape[0])
        rate = n / (time.perf_counter() - t0)
        tag = "warm-up" if epoch == 0 else f"epoch {epoch}"
        print(f"  {'materialize' if materialize else 'stream':11s} {tag:8s}: {n} samples, {rate:7.0f} samples/s")
        if epoch > 0:
            rates.append(rate)
    print(f"  ({'materialize' if materialize else 'stream'} build: {build_s:.2f} s)")
    return rates


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    import ray

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data
        if args.smoke_test:
            from macdiff_ray.data.prepare import prepare_dataset

            data_dir = Path(tmp) / "synthetic"
            prepare_dataset("synthetic", None, data_dir, progress=False,
                            synthetic_options={"num_samples": 120, "num_classes": 4, "seed": 0})
            args.benchmark, args.epochs = "synthetic", 1
        elif data_dir is None:
            from macdiff_ray.data.prepare import prepare_dataset

            if not args.source.is_dir():
                sys.exit(f"NW-UCLA source not found: {args.source} (pass --data or --source)")
            data_dir = Path(tmp) / "ucla"
            t0 = time.perf_counter()
            prepare_dataset("ucla", args.source, data_dir, progress=False)
            print(f"prepared {args.source} -> {data_dir} in {time.perf_counter() - t0:.1f} s")

        print(f"date {dt.datetime.now().isoformat(timespec='seconds')}, {platform.node()}, {platform.processor() or platform.machine()}, "
              f"os.cpu_count()={os.cpu_count()}, load avg {os.getloadavg()[0]:.2f}, python {platform.python_version()}, "
              f"ray {ray.__version__}, torch {torch.__version__}")
        print(f"data {data_dir}, benchmark {args.benchmark}/{args.split}, batch {args.batch_size}, "
              f"Ray num_cpus={args.num_cpus}")
        print(f"TrainTransform alone (1 thread, in-process): "
              f"{transform_throughput(data_dir, args.benchmark, args.split, args.batch_size):.0f} samples/s")

        ray.init(num_cpus=args.num_cpus, include_dashboard=False, object_store_memory=int(1e9), log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
        from ray.data import DataContext

        DataContext.get_current().enable_progress_bars = False
        try:
            modes = {"stream": [False], "materialize": [True], "both": [False, True]}[args.mode]
            for materialize in modes:
                rates = time_pipeline(data_dir, args, materialize)
                name = "materialize" if materialize else "stream"
                print(f"RESULT {name}: mean {np.mean(rates):.0f} samples/s over {len(rates)} timed epochs "
                      f"(min {np.min(rates):.0f}, max {np.max(rates):.0f})")
        finally:
            ray.shutdown()


if __name__ == "__main__":
    main()
