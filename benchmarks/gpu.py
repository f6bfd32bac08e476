"""GPU benchmark and framework-free training run that needs no Ray: torch, numpy and pyarrow only (issue 16).

    python benchmarks/gpu.py --out runs/gpu.json                       # CUDA, paper preset, defaults (< 8 min on an H200)
    python benchmarks/gpu.py --data DIR --benchmark ntu60-xsub --probe --out runs/gpu.json
    python benchmarks/gpu.py --device cpu --smoke-test --out /tmp/gpu.json   # seconds, the end-to-end check

In one process, on one device:
1. the yardstick: a bf16 and an fp32 n x n matmul (n = 8192 on CUDA, 2048 on the CPU), best of 10;
2. the ``paper`` preset's training step (forward, backward, AdamW) at each ``--batch-sizes`` and each
   ``--precisions`` (bf16 autocast or fp32) on synthetic tensors already on the device: samples/s (median of
   ``--repeats`` timed runs of ``--steps`` steps through ``train.loop.train_epoch``, whose loss accounting reads
   the device once per run), FLOPs per sample counted by ``FlopCounterMode``, MFU against the same-run matmul of
   the same precision, and peak memory (``torch.cuda.max_memory_allocated`` per batch size; on the CPU the
   process's peak resident set). ``--sdpa`` pins the attention kernel, ``--compile`` compiles the blocks;
3. a short training run through the same ``train_epoch`` over prepared shards read with pyarrow
   (``data.shard_reader``: the CPU only decodes) and the batched transforms on the device
   (``data.device_transforms``), or over a synthetic prepared set made in a temp folder when ``--data`` is not
   given: loss and samples/s per epoch;
4. ``--probe``: a linear probe (BatchNorm without affine + linear, SGD, cached per-joint features) of the trained
   encoder against the same encoder at initialisation.

Every figure goes to ``--out`` (JSON) and is printed. Nothing is asserted about speed. The JSON lists the Ray
modules imported (none: the check in tests/test_gpu_benchmark.py runs it with ``import ray`` made to fail).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import itertools
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from macdiff_ray.diffusion import DiffusionConfig, make_schedule  # noqa: E402
from macdiff_ray.model import MacDiff, SkeletonEncoder, count_parameters, model_preset  # noqa: E402
from macdiff_ray.train.loop import DiffusionLoss, train_epoch  # noqa: E402
from macdiff_ray.train.optim import WarmupCosine, build_optimizer  # noqa: E402
from macdiff_ray.train.perf import (  # noqa: E402
    SDPA_CHOICES, count_flops, matmul_flops, peak_memory_bytes, reset_peak_memory, rss_bytes, sdpa_backend, sync,
    write_figures,
)

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
SMOKE = dict(threads=1, preset="tiny", num_frames=16, batch_sizes=[2, 4], steps=2, warmup=1, repeats=1, matmul_n=256,
             synthetic_samples=96, synthetic_classes=4, train_epochs=2, train_batch_size=8, probe_epochs=5)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, help="JSON file of every figure")
    p.add_argument("--preset", default="paper", choices=("paper", "small", "tiny"))
    p.add_argument("--num-joints", type=int, default=25, help="joints of the step sweep's synthetic tensors")
    p.add_argument("--num-frames", type=int, default=120)
    p.add_argument("--batch-sizes", type=int, nargs="+", help="default: 128 256 512 1024 on CUDA, 8 on the CPU")
    p.add_argument("--precisions", nargs="+", choices=tuple(DTYPES), default=["bf16", "fp32"])
    p.add_argument("--sdpa", choices=SDPA_CHOICES, default="auto", help="attention kernel (auto: torch's choice)")
    p.add_argument("--compile", action="store_true", help="torch.compile each Transformer block")
    p.add_argument("--adamw", choices=("default", "fused"), default=None,
                   help="AdamW implementation (default: fused on CUDA, torch's default on the CPU)")
    p.add_argument("--tf32", action="store_true", help="allow TF32 for fp32 matmuls on CUDA (off: true fp32)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3, help="timed runs per configuration (median reported)")
    p.add_argument("--matmul-n", type=int, help="matmul size (default 8192 on CUDA, 2048 on the CPU)")
    p.add_argument("--data", help="prepared dataset (local or URI) for the training run; default synthetic")
    p.add_argument("--benchmark", help="benchmark of --data (e.g. ntu60-xsub)")
    p.add_argument("--synthetic-samples", type=int, default=8192, help="sequences of the synthetic set (half train)")
    p.add_argument("--synthetic-classes", type=int, default=10)
    p.add_argument("--train-preset", choices=("paper", "small", "tiny"), help="default: --preset")
    p.add_argument("--train-precision", choices=tuple(DTYPES), default="bf16")
    p.add_argument("--train-epochs", type=int, default=3)
    p.add_argument("--train-batch-size", type=int,
                   help="default: the sweep's fastest batch size for the precision, at most 1/8 of the train split")
    p.add_argument("--no-train", action="store_true", help="skip the training run")
    p.add_argument("--probe", action="store_true", help="linear probe of the trained encoder (and of its init)")
    p.add_argument("--probe-epochs", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke-test", action="store_true", help="tiny sizes everywhere (seconds on a CPU)")
    args = p.parse_args(argv)
    if args.smoke_test:
        for k, v in SMOKE.items():
            setattr(args, k, v)
        args.probe = True
    if args.data and not args.benchmark:
        p.error("--data needs --benchmark")
    return args


def environment(device: torch.device, args: argparse.Namespace) -> dict:
    env = {"date": dt.datetime.now().isoformat(timespec="seconds"), "host": platform.node(),
           "python": platform.python_version(), "torch": torch.__version__, "device": str(device),
           "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "numpy": np.__version__}
    try:
        import pyarrow

        env["pyarrow"] = pyarrow.__version__
    except ImportError:  # pragma: no cover - a dependency
        env["pyarrow"] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, gpu_memory_bytes=int(props.total_memory), capability=list(torch.cuda.get_device_capability(device)),
                   cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                   tf32_matmul=bool(torch.backends.cuda.matmul.allow_tf32))
    else:
        env["cpu"] = platform.processor() or platform.machine()
        env["load_avg_1min"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return env


def build(preset: str, num_joints: int, num_frames: int, compile_blocks: bool, device: torch.device, seed: int):
    torch.manual_seed(seed)
    cfg = model_preset(preset, num_joints=num_joints, num_frames=num_frames, use_compile=compile_blocks)
    return DiffusionLoss(MacDiff(cfg), make_schedule(DiffusionConfig())).to(device).to_device(device), cfg


def synthetic_batch(cfg, n: int, device: torch.device) -> dict:
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(n, 1, cfg.num_frames, cfg.num_joints, cfg.channels, generator=g)  # (B, M, T, V, C)
    return {"x": x.to(device), "x_view": (x + 0.005 * torch.randn(x.shape, generator=g)).to(device),
            "person_valid": torch.ones(n, 1, dtype=torch.bool, device=device)}


def fused_adamw(args: argparse.Namespace, device: torch.device):
    choice = args.adamw or ("fused" if device.type == "cuda" else "default")
    return True if choice == "fused" else None


def run_steps(model, opt, batch, steps: int, device, amp_dtype) -> dict:
    sched = WarmupCosine(1e-4, 1e-5, 0, 10**9)
    return train_epoch(model, opt, itertools.repeat(batch, steps), lr_schedule=sched, start_step=0, max_steps=steps,
                       epoch=0, device=device, amp_dtype=amp_dtype, log_every=max(1, steps))


def step_sweep(args, device, matmul: dict) -> tuple[dict, list[dict]]:
    """FLOPs per sample (counted once, uncompiled: an arithmetic property of the model), then each (precision,
    batch size): samples/s, MFU against the same precision's matmul, peak memory."""
    model, cfg = build(args.preset, args.num_joints, args.num_frames, False, device, args.seed)
    n0 = min(args.batch_sizes)
    opt = build_optimizer(model.net, 1e-4, 0.05, (0.9, 0.95))
    flops = count_flops(lambda: run_steps(model, opt, synthetic_batch(cfg, n0, device), 1, device, None)) / n0
    info = {"preset": args.preset, "num_frames": cfg.num_frames, "num_joints": cfg.num_joints,
            "tokens": cfg.num_tokens, "visible_tokens": cfg.num_visible,
            "params_encoder": count_parameters(model.net.encoder), "params_decoder": count_parameters(model.net.decoder),
            "flops_per_sample": flops, "flops_counted_at_batch": n0, "sdpa": args.sdpa, "compile": args.compile,
            "adamw_fused": bool(fused_adamw(args, device))}
    print(f"model {args.preset}: T={cfg.num_frames} V={cfg.num_joints} L={cfg.num_tokens} K={cfg.num_visible}, "
          f"{flops / 1e9:.2f} GFLOP per sample (fwd+bwd, FlopCounterMode, batch {n0})")
    del model, opt
    rows: list[dict] = []
    for prec in args.precisions:
        amp = DTYPES[prec] if prec != "fp32" else None
        out_of_memory = False
        for n in sorted(args.batch_sizes):
            row = {"precision": prec, "batch_size": n}
            if out_of_memory:
                rows.append(dict(row, skipped="a smaller batch ran out of memory"))
                continue
            try:
                model, cfg = build(args.preset, args.num_joints, args.num_frames, args.compile, device, args.seed)
                opt = build_optimizer(model.net, 1e-4, 0.05, (0.9, 0.95), fused=fused_adamw(args, device))
                batch = synthetic_batch(cfg, n, device)
                with sdpa_backend(args.sdpa):
                    t0 = time.perf_counter()
                    run_steps(model, opt, batch, args.warmup, device, amp)
                    sync(device)
                    warmup_s = time.perf_counter() - t0
                    reset_peak_memory(device)
                    rates, losses = [], []
                    for _ in range(args.repeats):
                        m = run_steps(model, opt, batch, args.steps, device, amp)
                        rates.append(m["samples_per_s"])
                        losses.append(m["loss"])
                sps = statistics.median(rates)
                row.update(samples_per_s=sps, samples_per_s_runs=rates, step_time_s=n / sps, warmup_s=warmup_s,
                           achieved_flops=flops * sps, mfu=flops * sps / matmul[prec], loss=losses[-1],
                           peak_memory_bytes=peak_memory_bytes(device), rss_bytes=rss_bytes())
                print(f"  {prec:4s} batch {n:5d}: {sps:9.1f} samples/s, {_rate(flops * sps)} = "
                      f"{row['mfu']:6.1%} of the {prec} matmul, peak memory {_gib(row['peak_memory_bytes'])}")
            except torch.OutOfMemoryError as e:
                out_of_memory = True
                row.update(oom=True, error=str(e).splitlines()[0])
                print(f"  {prec:4s} batch {n:5d}: out of memory")
            except RuntimeError as e:  # e.g. a pinned --sdpa kernel that cannot run this call
                row.update(error=str(e).splitlines()[0][:300])
                print(f"  {prec:4s} batch {n:5d}: error: {row['error']}")
            rows.append(row)
            model = opt = batch = None
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return info, rows


def _rate(flops_per_s: float) -> str:
    return f"{flops_per_s / 1e12:.2f} TFLOP/s" if flops_per_s >= 1e12 else f"{flops_per_s / 1e9:.1f} GFLOP/s"


def _gib(b) -> str:
    return "n/a" if b is None else f"{b / 2**30:.2f} GiB"


def prepared_data(args, tmp: str) -> tuple[str, str]:
    if args.data:
        return args.data, args.benchmark
    from macdiff_ray.data.prepare import prepare_dataset

    out = os.path.join(tmp, "synthetic")
    t0 = time.perf_counter()
    prepare_dataset("synthetic", None, out, progress=False, synthetic_options={
        "num_samples": args.synthetic_samples, "num_classes": args.synthetic_classes, "seed": args.seed})
    print(f"synthetic data: {args.synthetic_samples} sequences prepared in {time.perf_counter() - t0:.1f} s -> {out}")
    return out, "synthetic"


def training_run(args, device, rows: list[dict], tmp: str) -> dict:
    from macdiff_ray.data.device_transforms import DeviceEvalTransform, DeviceTrainTransform
    from macdiff_ray.data.manifest import load_manifest
    from macdiff_ray.data.shard_reader import ShardBatches

    data_dir, benchmark = prepared_data(args, tmp)
    manifest = load_manifest(data_dir)
    stats = manifest["stats"][benchmark]
    num_train = int(manifest["split_counts"][benchmark]["train"])
    ok = [r for r in rows if r["precision"] == args.train_precision and "samples_per_s" in r]
    bs = args.train_batch_size or min(max(ok, key=lambda r: r["samples_per_s"])["batch_size"] if ok else 64,
                                      max(1, num_train // 8))  # at least 8 steps per epoch
    bs = min(bs, num_train)
    steps = num_train // bs
    if steps < 1:
        raise SystemExit(f"training run: batch {bs} exceeds the {num_train} training sequences")
    preset = args.train_preset or args.preset
    model, cfg = build(preset, int(manifest["num_joints"]), args.num_frames, args.compile, device, args.seed)
    init_encoder = {k: v.detach().clone() for k, v in model.net.encoder.state_dict().items()}
    peak_lr = 1e-3 * bs / 128  # the project's linear scaling rule (train/config.py)
    opt = build_optimizer(model.net, peak_lr, 0.05, (0.9, 0.95), fused=fused_adamw(args, device))
    sched = WarmupCosine(peak_lr, min(1e-5, peak_lr), steps, steps * args.train_epochs)  # warmup: one epoch
    amp = DTYPES[args.train_precision] if args.train_precision != "fp32" else None
    pin = device.type == "cuda"
    reader = ShardBatches(data_dir, benchmark, "train", batch_size=bs, shuffle=True, seed=args.seed, drop_last=True,
                          pin_memory=pin)
    tf = DeviceTrainTransform(stats, num_frames=args.num_frames, persons="first", seed=args.seed)
    print(f"training run: {preset}, {benchmark} ({num_train} train sequences, {len(reader.shards)} shards), batch "
          f"{bs}, {steps} steps/epoch, {args.train_precision}, peak lr {peak_lr:.3g}, warmup 1 epoch")
    history, step = [], 0
    t_run = time.perf_counter()
    with sdpa_backend(args.sdpa):
        for epoch in range(args.train_epochs):
            torch.manual_seed(args.seed + 10007 * (epoch + 1))
            batches = (tf({k: v.to(device, non_blocking=pin) for k, v in b.items()}, epoch=epoch)
                       for b in reader.epoch(epoch))
            m = train_epoch(model, opt, batches, lr_schedule=sched, start_step=step, max_steps=steps, epoch=epoch,
                            device=device, amp_dtype=amp, log_every=10)
            step = m["step"]
            history.append({k: m[k] for k in ("loss", "mse", "uniformity", "grad_norm", "lr", "samples_per_s",
                                               "epoch_time_s", "steps")} | {"epoch": epoch + 1})
            print(f"  epoch {epoch + 1}/{args.train_epochs}: loss {m['loss']:.4f}, {m['samples_per_s']:.1f} "
                  f"samples/s ({m['epoch_time_s']:.1f} s, data read and transformed in the loop)")
    out = {"data": data_dir if args.data else "synthetic (temp folder)", "benchmark": benchmark, "preset": preset,
           "num_train": num_train, "batch_size": bs, "steps_per_epoch": steps, "precision": args.train_precision,
           "peak_lr": peak_lr, "epochs": history, "wall_time_s": time.perf_counter() - t_run,
           "peak_memory_bytes": peak_memory_bytes(device)}
    if args.probe:
        probe_tf = DeviceEvalTransform(stats, num_frames=args.num_frames)
        feats = {}
        for name, state in (("pretrained", None), ("init", init_encoder)):
            enc = model.net.encoder
            if state is not None:  # the same architecture with the weights it had before training
                enc = SkeletonEncoder(dataclasses.replace(cfg, use_compile=False)).to(device)
                enc.load_state_dict(state)
            feats[name] = {sp: encode_split(enc, data_dir, benchmark, sp, probe_tf, device, amp, bs)
                           for sp in ("train", "test")}
        out["probe"] = {name: linear_probe(f, int(manifest["num_classes"]), args.probe_epochs, device, args.seed)
                        for name, f in feats.items()}
        for name, r in out["probe"].items():
            print(f"  linear probe ({name} encoder, per-joint, {args.probe_epochs} epochs): test top-1 "
                  f"{r['test_top1']:.1%} ({r['num_train']} / {r['num_test']} sequences)")
    return out


@torch.no_grad()
def encode_split(encoder, data_dir, benchmark, split, tf, device, amp, bs) -> tuple[torch.Tensor, torch.Tensor]:
    from macdiff_ray.data.shard_reader import ShardBatches
    from macdiff_ray.eval.features import encode_persons
    from macdiff_ray.train.loop import autocast

    encoder.eval()
    fs, ys = [], []
    for b in ShardBatches(data_dir, benchmark, split, batch_size=bs, shuffle=False).epoch(0):
        out = tf({k: v.to(device) for k, v in b.items()})
        with autocast(device, amp):
            f = encode_persons(encoder, out["x"], out["person_valid"], "per_joint")  # (B, V, D)
        fs.append(f.float().flatten(1))
        ys.append(out["label"])
    return torch.cat(fs), torch.cat(ys)


def linear_probe(feats: dict, num_classes: int, epochs: int, device, seed: int) -> dict:
    """BatchNorm (no affine) + linear on cached features, SGD lr 0.1 momentum 0.9 with a cosine, batch 256."""
    from macdiff_ray.eval.heads import LinearHead

    (xtr, ytr), (xte, yte) = feats["train"], feats["test"]
    torch.manual_seed(seed)
    head = LinearHead(xtr.shape[1], num_classes).to(device)
    opt = torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, epochs))
    for _ in range(epochs):
        head.train()
        for idx in torch.randperm(len(ytr), device=device).split(256):
            loss = torch.nn.functional.cross_entropy(head(xtr[idx]), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
    head.eval()
    with torch.no_grad():
        acc = float((head(xte).argmax(1) == yte).float().mean())
    return {"test_top1": acc, "num_train": int(len(ytr)), "num_test": int(len(yte)), "epochs": epochs,
            "feature": "per_joint", "feature_dim": int(xtr.shape[1])}


def main(argv=None) -> dict:
    args = parse_args(argv)
    t_start = time.perf_counter()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32
    args.batch_sizes = args.batch_sizes or ([128, 256, 512, 1024] if device.type == "cuda" else [8])
    n = args.matmul_n or (8192 if device.type == "cuda" else 2048)
    result: dict = {"environment": environment(device, args), "args": {k: (str(v) if isinstance(v, Path) else v)
                                                                        for k, v in vars(args).items()}}
    print(" ".join(f"{k}={v}" for k, v in result["environment"].items()))
    matmul = {p: matmul_flops(device, DTYPES[p], n) for p in DTYPES}
    result["matmul"] = {"n": n, "flops_per_s": matmul}
    print(f"matmul {n}^3 on {device}: " + ", ".join(f"{p} {_rate(v)}" for p, v in matmul.items()))
    result["model"], result["steps"] = step_sweep(args, device, matmul)
    if not args.no_train:
        with tempfile.TemporaryDirectory(prefix="macdiff_gpu_bench_") as tmp:
            result["train"] = training_run(args, device, result["steps"], tmp)
    result["ray_modules_imported"] = sorted(m for m, mod in sys.modules.items()
                                            if mod is not None and (m == "ray" or m.startswith("ray.")))
    result["wall_time_s"] = time.perf_counter() - t_start
    print(f"done in {result['wall_time_s']:.0f} s; Ray modules imported: {result['ray_modules_imported'] or 'none'}")
    if args.out:
        write_figures(args.out, result)
    return result


if __name__ == "__main__":
    main()
