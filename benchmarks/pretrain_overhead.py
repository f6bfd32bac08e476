"""Ray Train overhead for MacDiff pretraining: samples/s of the same model and data three ways.

1. plain single-process PyTorch loop (``train_epoch`` over ``iter_torch`` of the same Ray Dataset, no Train),
2. Ray Train, 1 worker,
3. Ray Train, 2 workers (CPU, gloo DDP).

Throughput is the steady state: the mean of epochs 2..E (epoch 1 carries worker/pipeline warm-up). Every
variant uses one torch thread per process (Ray gives each 0.5-CPU worker OMP_NUM_THREADS=1). Prints measured
figures only.

    python benchmarks/pretrain_overhead.py [--data DIR --benchmark NAME] [--preset tiny] [--epochs 4] \
        [--steps 20] [--batch-size 32] [--num-frames 64]

Without ``--data`` it prepares NW-UCLA from ../shared/data when present, else a synthetic dataset.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")


def prepare(args) -> tuple[str, str]:
    from macdiff_ray.data.prepare import prepare_dataset

    if args.data:
        return args.data, args.benchmark
    out = Path(tempfile.mkdtemp(prefix="bench_pretrain_")) / "prepared"
    ucla = REPO.parent / "shared" / "data" / "nw_ucla" / "all_sqe"
    if ucla.is_dir():
        prepare_dataset("ucla", ucla, out, progress=False)
        return str(out), "ucla-xview"
    prepare_dataset("synthetic", None, out, progress=False,
                    synthetic_options={"num_samples": 1200, "num_classes": 6, "seed": 0})
    return str(out), "synthetic"


def plain_loop(cfg) -> float:
    """Single process, no Ray Train: the same train_epoch/model/optimiser/schedule. Returns steady samples/s."""
    import torch

    from macdiff_ray.data.pipeline import iter_torch
    from macdiff_ray.diffusion import make_schedule
    from macdiff_ray.model import MacDiff
    from macdiff_ray.train.config import resolve_model_config, steps_per_epoch
    from macdiff_ray.train.loop import DiffusionLoss, train_epoch
    from macdiff_ray.train.optim import WarmupCosine, build_optimizer
    from macdiff_ray.train.pretrain import build_datasets, describe_data

    torch.set_num_threads(1)
    info = describe_data(cfg)
    steps = steps_per_epoch(cfg, info["num_train"])
    torch.manual_seed(cfg.seed)
    net = MacDiff(resolve_model_config(cfg, info["num_joints"]))
    model = DiffusionLoss(net, make_schedule(cfg.diffusion))
    opt = build_optimizer(net, cfg.effective_lr, cfg.weight_decay, cfg.betas)
    sched = WarmupCosine(cfg.effective_lr, cfg.min_lr, steps, steps * cfg.epochs)
    ds = build_datasets(cfg)["train"]
    rates, step = [], 0
    for epoch in range(cfg.epochs):
        m = train_epoch(model, opt, iter_torch(ds, cfg.batch_size, shuffle=True, drop_last=True, seed=epoch),
                        lr_schedule=sched, start_step=step, max_steps=steps, epoch=epoch,
                        device=torch.device("cpu"), persons=cfg.persons)
        step = m["step"]
        rates.append(m["samples_per_s"])
        print(f"  plain epoch {epoch + 1}: {m['samples_per_s']:.1f} samples/s, loss {m['loss']:.4f}", flush=True)
    return sum(rates[1:]) / len(rates[1:])


def main() -> None:
    p = argparse.ArgumentParser(description="Ray Train vs plain PyTorch samples/s")
    p.add_argument("--data")
    p.add_argument("--benchmark", default="ucla-xview")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--steps", type=int, default=20, help="optimiser steps per epoch")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-frames", type=int, default=64)
    args = p.parse_args()
    if args.epochs < 2:
        p.error("--epochs must be >= 2 (epoch 1 is warm-up and excluded)")

    import ray

    from macdiff_ray.config import from_dict
    from macdiff_ray.train import PretrainConfig, run_pretrain

    data_dir, benchmark = prepare(args)
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    root = Path(tempfile.mkdtemp(prefix="bench_pretrain_runs_"))

    def cfg(workers: int, name: str):
        return from_dict(PretrainConfig, dict(
            data_dir=data_dir, benchmark=benchmark, preset=args.preset, num_frames=args.num_frames,
            epochs=args.epochs, batch_size=args.batch_size, max_steps_per_epoch=args.steps, warmup_epochs=1.0,
            num_workers=workers, use_gpu="no", output=str(root / name), checkpoint_every=args.epochs,
            keep_checkpoints=1,
        ))

    print(f"data {data_dir} ({benchmark}), preset {args.preset}, T0 {args.num_frames}, global batch "
          f"{args.batch_size}, {args.steps} steps x {args.epochs} epochs, {os.cpu_count()} CPUs")
    t = time.perf_counter()
    plain = plain_loop(cfg(1, "plain"))
    print(f"plain PyTorch loop: {plain:.1f} samples/s (steady), {time.perf_counter() - t:.1f} s total", flush=True)
    results = {}
    for workers in (1, 2):
        t = time.perf_counter()
        r = run_pretrain(cfg(workers, f"train{workers}"), quiet=True)
        results[workers] = r["samples_per_s_mean"]
        print(f"Ray Train {workers} worker(s): {r['samples_per_s_mean']:.1f} samples/s (steady), "
              f"{time.perf_counter() - t:.1f} s wall incl. start-up", flush=True)
    print(f"overhead of Ray Train (1 worker) vs plain loop: {100 * (1 - results[1] / plain):+.1f}% "
          f"(goal <= 5%)")
    print(f"2 workers vs 1 worker: {results[2] / results[1]:.2f}x samples/s")
    ray.shutdown()


if __name__ == "__main__":
    main()
