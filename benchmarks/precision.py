"""bf16 autocast against fp32 on one device: the same model, the same batches, the same noise, interleaved (issue 16).

    python benchmarks/precision.py --data prepared/ucla --benchmark ucla-xview --preset paper --num-frames 32 \
        --batch-size 8 --steps 200 --threads 2 --out runs/precision/paper.json
    python benchmarks/precision.py --smoke-test --out /tmp/precision.json      # seconds, the end-to-end check

Two copies of the model start from the same weights, each with its own AdamW. The run goes in chunks of
``--chunk`` steps: each chunk's batches are read once (prepared shards read with pyarrow, training transforms on
the device), and both copies train on those same batches, each after the same ``torch.manual_seed``, so they draw
the same diffusion steps, noise and masks. Only the precision differs. The order alternates chunk by chunk
(fp32 first, then bf16 first), so the two speeds are measured side by side under the same machine load.

Prints one line per chunk (each precision's mean loss and samples/s) and, at the end, both precisions' samples/s
over the whole run, their ratio, and the gap between the two loss curves (mean relative difference of the chunk
losses over the last half of the run). ``--out`` gets every figure as JSON, and a PNG of both loss curves is
written beside it. Nothing is asserted about speed; the decision this informs (``PretrainConfig.cpu_precision``)
is the reader's.
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

import torch  # noqa: E402

from macdiff_ray.diffusion import DiffusionConfig, make_schedule  # noqa: E402
from macdiff_ray.model import MacDiff, count_parameters, model_preset  # noqa: E402
from macdiff_ray.train.loop import DiffusionLoss, train_epoch  # noqa: E402
from macdiff_ray.train.optim import WarmupCosine, build_optimizer  # noqa: E402
from macdiff_ray.train.perf import matmul_flops, write_figures  # noqa: E402

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}
SMOKE = dict(preset="tiny", num_frames=16, batch_size=4, steps=4, chunk=2, threads=1, synthetic_samples=48,
             matmul_n=256)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="prepared dataset directory (default: a synthetic set made in a temp folder)")
    p.add_argument("--benchmark", help="benchmark of --data, e.g. ucla-xview")
    p.add_argument("--preset", default="paper", choices=("paper", "small", "tiny"))
    p.add_argument("--num-frames", type=int, default=120, help="T0 (use the data's own length)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=200, help="optimiser steps per precision")
    p.add_argument("--chunk", type=int, default=10, help="steps per interleaved chunk")
    p.add_argument("--matmul-n", dest="matmul_n", type=int,
                   help="size of the reference matmul (default 2048 on the CPU, 8192 on CUDA; a CPU without native "
                        "bf16 kernels takes seconds per 2048^3 bf16 matmul)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak lr (warm-up over the first tenth of the steps)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--synthetic-samples", type=int, default=512, help="sequences of the synthetic set (half train)")
    p.add_argument("--out", type=Path, help="JSON file of every figure; the PNG of the curves goes beside it")
    p.add_argument("--smoke-test", action="store_true", help="tiny sizes everywhere (seconds on a CPU)")
    args = p.parse_args(argv)
    if args.smoke_test:
        for k, v in SMOKE.items():
            setattr(args, k, v)
    if args.chunk < 1 or args.steps < args.chunk:
        p.error(f"--chunk must be >= 1 and <= --steps (got chunk {args.chunk}, steps {args.steps})")
    if bool(args.data) != bool(args.benchmark):
        p.error("--data and --benchmark go together")
    return args


def _dataset(args, tmp: str) -> tuple[str, str]:
    if args.data:
        return args.data, args.benchmark
    from macdiff_ray.data.prepare import prepare_dataset

    out = os.path.join(tmp, "synthetic")
    prepare_dataset("synthetic", None, out, progress=False,
                    synthetic_options={"num_samples": args.synthetic_samples, "seed": args.seed})
    return out, "synthetic"


def _chunks(data_dir: str, benchmark: str, args, device: torch.device, stats: dict):
    """Lists of ``--chunk`` transformed batches, over as many epochs of the training split as the steps need."""
    from macdiff_ray.data.device_transforms import DeviceTrainTransform
    from macdiff_ray.data.shard_reader import ShardBatches

    reader = ShardBatches(data_dir, benchmark, "train", batch_size=args.batch_size, shuffle=True, seed=args.seed,
                          drop_last=True)
    tf = DeviceTrainTransform(stats, num_frames=args.num_frames, persons="first", seed=args.seed)
    chunk, epoch = [], 0
    while True:
        torch.manual_seed(args.seed + 10007 * (epoch + 1))
        n = 0
        for b in reader.epoch(epoch):
            chunk.append(tf({k: v.to(device) for k, v in b.items()}, epoch=epoch))
            n += 1
            if len(chunk) == args.chunk:
                yield chunk
                chunk = []
        if n == 0:
            raise SystemExit(f"{data_dir}: batch {args.batch_size} exceeds the training split of {benchmark}")
        epoch += 1


def _plot(path: Path, rows: list[dict], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name in PRECISIONS:
        ax.plot([r["step"] for r in rows], [r[name]["loss"] for r in rows], label=name, lw=1.4)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel(f"training loss (mean over each chunk)")
    ax.set_title(title, fontsize=9)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args) -> dict:
    from macdiff_ray.data.manifest import load_manifest

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="macdiff_precision_") as tmp:
        data_dir, benchmark = _dataset(args, tmp)
        manifest = load_manifest(data_dir)
        stats = manifest["stats"][benchmark]
        cfg = model_preset(args.preset, num_joints=int(manifest["num_joints"]), num_frames=args.num_frames)
        torch.manual_seed(args.seed)
        first = MacDiff(cfg)
        models, opts = {}, {}
        for name in PRECISIONS:
            net = MacDiff(cfg)
            net.load_state_dict(first.state_dict())  # the same initial weights for both
            models[name] = DiffusionLoss(net, make_schedule(DiffusionConfig())).to(device).to_device(device)
            opts[name] = build_optimizer(net, args.lr, 0.05, (0.9, 0.95))
        sched = WarmupCosine(args.lr, min(1e-5, args.lr), max(1, args.steps // 10), args.steps)
        size = args.matmul_n or (2048 if device.type == "cpu" else 8192)
        matmul = {n: matmul_flops(device, d or torch.float32, size)
                  for n, d in PRECISIONS.items()}
        print(f"{args.preset}, {benchmark}, batch {args.batch_size}, {args.num_frames} frames, {args.steps} steps "
              f"per precision in chunks of {args.chunk}, {torch.get_num_threads()} threads on {device}; "
              f"{count_parameters(first) / 1e6:.1f} M parameters; matmul fp32 {matmul['fp32'] / 1e9:.0f}, "
              f"bf16 {matmul['bf16'] / 1e9:.0f} GFLOP/s")
        rows, totals = [], {n: {"time_s": 0.0, "samples": 0} for n in PRECISIONS}
        step = 0
        t0 = time.perf_counter()
        for i, batches in enumerate(_chunks(data_dir, benchmark, args, device, stats)):
            if step >= args.steps:
                break
            order = list(PRECISIONS) if i % 2 == 0 else list(reversed(PRECISIONS))
            row: dict = {"step": step + len(batches)}
            for name in order:
                torch.manual_seed(args.seed * 1_000_003 + i)  # the same t, noise and masks for both copies
                m = train_epoch(models[name], opts[name], batches, lr_schedule=sched, start_step=step,
                                max_steps=len(batches), epoch=0, device=device, amp_dtype=PRECISIONS[name],
                                log_every=len(batches))
                row[name] = {"loss": m["loss"], "samples_per_s": m["samples_per_s"]}
                totals[name]["time_s"] += m["epoch_time_s"]
                totals[name]["samples"] += m["samples"]
            step += len(batches)
            rows.append(row)
            print(f"  step {step}/{args.steps}: fp32 loss {row['fp32']['loss']:.4f} "
                  f"({row['fp32']['samples_per_s']:.2f} samples/s) | bf16 loss {row['bf16']['loss']:.4f} "
                  f"({row['bf16']['samples_per_s']:.2f} samples/s) | {time.perf_counter() - t0:.0f} s", flush=True)
    rate = {n: t["samples"] / t["time_s"] for n, t in totals.items()}
    late = rows[len(rows) // 2:]
    gap = sum(abs(r["bf16"]["loss"] - r["fp32"]["loss"]) / abs(r["fp32"]["loss"]) for r in late) / len(late)
    result = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": platform.node(),
        "torch": torch.__version__, "device": str(device), "threads": torch.get_num_threads(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "matmul_flops_per_s": matmul, "chunks": rows,
        "samples_per_s": rate, "bf16_over_fp32": rate["bf16"] / rate["fp32"],
        "final_loss": {n: rows[-1][n]["loss"] for n in PRECISIONS},
        "late_mean_relative_loss_gap": gap,
    }
    print(f"samples/s over the run: fp32 {rate['fp32']:.2f}, bf16 {rate['bf16']:.2f} "
          f"(bf16 / fp32 = {result['bf16_over_fp32']:.2f}x, interleaved); last chunk's loss: fp32 "
          f"{result['final_loss']['fp32']:.4f}, bf16 {result['final_loss']['bf16']:.4f}; mean relative gap of the "
          f"chunk losses over the last half: {100 * gap:.1f}%")
    if args.out:
        write_figures(args.out, result)
        png = args.out.with_suffix(".png")
        _plot(png, rows, f"{args.preset}, {benchmark}, batch {args.batch_size}, {args.num_frames} frames, "
                         f"{result['threads']} threads; bf16/fp32 speed {result['bf16_over_fp32']:.2f}x")
        print(f"figures: {args.out}; curves: {png}")
    return result


def main(argv=None) -> dict:
    return run(parse_args(argv))


if __name__ == "__main__":
    main()
