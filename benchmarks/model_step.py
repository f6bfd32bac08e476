"""Pretraining step throughput of the MacDiff model (forward + backward + AdamW), FLOPs and matmul efficiency.

    python benchmarks/model_step.py --preset paper --batch-size 8 --threads 2
    python benchmarks/model_step.py --preset tiny --batch-size 64 --threads 2
    python benchmarks/model_step.py --preset paper --batch-size 64 --device cuda --bf16
    python benchmarks/model_step.py --preset paper --precision bf16 --cpu-bf16-attention bf16   # the A/B of the lever

Prints measured figures only: samples/s after warm-up (median over timed steps), FLOPs per sample of one training
step counted by ``train.perf.count_flops`` (FlopCounterMode: matmuls and attention, the latter counted under the
math kernel; elementwise ops are not counted), the achieved FLOP/s, and that as a fraction of a 2048^3 fp32 (or bf16
in bf16) matmul measured in the same run on the same device and thread count.

Precision: ``--precision auto`` (the default) is what a pretraining run gets on the CPU (``cpu_precision: auto``,
``train/pretrain.py``): bf16 autocast on a CPU with native bf16 kernels, fp32 otherwise; ``--bf16`` is
``--precision bf16``. Under CPU bf16, attention runs in float32 unless ``--cpu-bf16-attention bf16``
(``model/layers.py``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from macdiff_ray.diffusion import DiffusionConfig, make_schedule  # noqa: E402
from macdiff_ray.model import PRESETS, MacDiff, count_parameters, model_preset  # noqa: E402
from macdiff_ray.model.layers import CPU_BF16_ATTENTION_CHOICES, set_cpu_bf16_attention  # noqa: E402
from macdiff_ray.train.perf import count_flops, matmul_flops  # noqa: E402
from macdiff_ray.train.perf import sync as _sync  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", choices=PRESETS, default="paper")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                    help="auto: as pretraining on the CPU (bf16 where the CPU has native bf16), fp32 on CUDA")
    ap.add_argument("--bf16", action="store_true", help="same as --precision bf16 (CUDA or CPU)")
    ap.add_argument("--cpu-bf16-attention", choices=CPU_BF16_ATTENTION_CHOICES,
                    default=CPU_BF16_ATTENTION_CHOICES[0],
                    help="how attention runs under CPU bf16 autocast (sliced: the default of training; "
                         "see macdiff_ray/model/layers.py)")
    ap.add_argument("--compile", action="store_true", help="torch.compile each Transformer block")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--num-joints", type=int, default=25)
    ap.add_argument("--profile", action="store_true", help="print the top ops of one step (torch.profiler)")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    if args.bf16:
        args.precision = "bf16"
    if args.precision == "auto":
        from macdiff_ray.train.pretrain import resolve_cpu_precision

        args.precision = resolve_cpu_precision("auto") if args.device == "cpu" else "fp32"
    args.bf16 = args.precision == "bf16"
    set_cpu_bf16_attention(args.cpu_bf16_attention)
    torch.manual_seed(0)
    device = torch.device(args.device)
    cfg = model_preset(args.preset, num_joints=args.num_joints, use_compile=args.compile)
    model = MacDiff(cfg).to(device).train()
    schedule = make_schedule(DiffusionConfig()).to(device)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "pos_embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "pos_embed" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
        lr=1e-4, betas=(0.9, 0.95), foreach=True,
    )
    n = args.batch_size
    x = torch.randn(n, cfg.num_frames, cfg.num_joints, cfg.channels, device=device)  # (N, T, V, C)
    x_view = x + 0.01 * torch.randn_like(x)  # (N, T, V, C)
    amp_dtype = torch.bfloat16

    def step() -> float:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=args.bf16):
            out = model.forward_loss(x, x_view, schedule)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        return out["loss"]

    flops_per_sample = count_flops(step) / n  # attention included (math kernel while counting)

    for _ in range(args.warmup):
        step()
    _sync(device)
    times, cpu_times = [], []
    for _ in range(args.steps):
        t0, c0 = time.perf_counter(), time.process_time()
        loss = step()
        _sync(device)
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    if not torch.isfinite(loss):
        raise RuntimeError(f"non-finite loss {float(loss)} in the benchmark")
    med = statistics.median(times)
    sps = n / med
    peak = matmul_flops(device, amp_dtype if args.bf16 else torch.float32)
    achieved = flops_per_sample * sps

    print(f"device={device} threads={args.threads} preset={args.preset} batch={n} precision={args.precision} "
          f"cpu_bf16_attention={args.cpu_bf16_attention} "
          f"compile={args.compile} V={cfg.num_joints} T={cfg.num_frames} L={cfg.num_tokens} K={cfg.num_visible}")
    print(f"params: encoder {count_parameters(model.encoder):,} decoder {count_parameters(model.decoder):,}")
    print(f"step time: median {med * 1e3:.1f} ms (min {min(times) * 1e3:.1f}, max {max(times) * 1e3:.1f}) "
          f"over {args.steps} steps after {args.warmup} warm-up")
    print(f"throughput: {sps:.2f} samples/s (median step); {n / min(times):.2f} samples/s (fastest step; "
          f"the machine's other load only slows steps down)")
    print(f"process CPU time per step (all threads): median {statistics.median(cpu_times):.2f} s; with "
          f"{args.threads} threads and no other load, wall time is about this divided by {args.threads}")
    print(f"FLOPs per sample (fwd+bwd, FlopCounterMode): {flops_per_sample / 1e9:.2f} GFLOP")
    print(f"achieved: {achieved / 1e9:.1f} GFLOP/s = {achieved / peak:.1%} of a measured 2048^3 "
          f"{'bf16' if args.bf16 else 'fp32'} matmul ({peak / 1e9:.1f} GFLOP/s)")

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=acts) as prof:
            step()
            _sync(device)
        key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=25))


if __name__ == "__main__":
    main()
