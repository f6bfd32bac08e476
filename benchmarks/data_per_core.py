"""Data path per CPU core: the CPU transform path against decode-only + device-side transforms (issue 16).

    python benchmarks/data_per_core.py --data prepared/ucla --benchmark ucla-xview --out runs/data_per_core.json
    python benchmarks/data_per_core.py --data DIR --benchmark ntu60-xsub --device cuda   # on a GPU node
    python benchmarks/data_per_core.py --smoke-test                                      # synthetic, seconds

Two paths over the same training split, measured in turn within each of ``--rounds`` rounds (interleaved, so a
change of the machine's load hits both alike):

(a) **cpu transform**: read + decode the Parquet rows, then ``TrainTransform`` (numpy crop/resize, rotation,
    noise, normalisation): what every Ray Data task of ``transform_device="cpu"`` does;
(b) **decode only**: read + decode, nothing else: what the CPU does with ``transform_device="train"``; the
    transforms then run batched on ``--device`` (``DeviceTrainTransform``), timed apart.

Each path is measured twice:
* in this process, one thread (``data.shard_reader``, no Ray): samples per CPU-second of this process (read,
  decode and numpy time of all its threads), i.e. the rate one core sustains, less sensitive to other load than
  wall time; and samples/s of wall time;
* through the Ray Data pipeline (``make_dataset`` + ``iter_torch`` on a local Ray with ``--num-cpus``): samples/s,
  and that divided by the logical CPUs Ray was given (``--skip-ray`` leaves it out).

Then the arithmetic for the GPU node type of ``cluster.yaml`` (its CPU count, minus the CPU its one Train worker
reserves): the cores needed to feed ``--gpu-rate`` samples/s (default 10,000: the issue's H200 target, a target,
not a measurement) with each path. Figures are printed and written to ``--out``; nothing is asserted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import torch  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, help="prepared dataset dir (default: prepare NW-UCLA into a temp dir)")
    p.add_argument("--source", type=Path, default=REPO.parent / "shared" / "data" / "nw_ucla" / "all_sqe",
                   help="NW-UCLA all_sqe folder used when --data is not given")
    p.add_argument("--benchmark", default="ucla-xview")
    p.add_argument("--num-frames", type=int, default=120)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of (a) then (b)")
    p.add_argument("--num-cpus", type=int, default=2, help="logical CPUs of the local Ray")
    p.add_argument("--device", default="cpu", help="device of the device-side transforms")
    p.add_argument("--gpu-rate", type=float, default=10_000.0,
                   help="samples/s one GPU consumes, for the arithmetic (default: the issue's H200 target)")
    p.add_argument("--cluster-yaml", type=Path, default=REPO / "cluster.yaml")
    p.add_argument("--skip-ray", action="store_true", help="in-process figures only")
    p.add_argument("--out", type=Path, help="JSON of every figure")
    p.add_argument("--smoke-test", action="store_true", help="synthetic data, one round, seconds")
    return p.parse_args(argv)


def in_process(data_dir, args, path: str, tf, epoch: int) -> dict:
    """One pass over the split in this process: samples per CPU-second and per wall second."""
    from macdiff_ray.data.shard_reader import ShardBatches

    reader = ShardBatches(str(data_dir), args.benchmark, "train", batch_size=args.batch_size, shuffle=True,
                          seed=epoch, prefetch=1)
    n, c0, t0 = 0, time.process_time(), time.perf_counter()
    for b in reader.epoch(epoch):
        if path == "cpu transform":
            tf({k: v.numpy() for k, v in b.items()})
        n += int(b["label"].shape[0])
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    return {"samples": n, "cpu_s": cpu, "wall_s": wall, "samples_per_cpu_s": n / max(cpu, 1e-9),
            "samples_per_s": n / max(wall, 1e-9)}


def device_transform_rate(data_dir, args, stats, device: torch.device) -> dict:
    """DeviceTrainTransform alone on decoded batches already on ``device`` (samples/s of wall time)."""
    from macdiff_ray.data.device_transforms import DeviceTrainTransform
    from macdiff_ray.data.shard_reader import ShardBatches
    from macdiff_ray.train.perf import sync

    batches = [{k: v.to(device) for k, v in b.items()} for b in
               ShardBatches(str(data_dir), args.benchmark, "train", batch_size=args.batch_size, shuffle=False).epoch(0)]
    tf = DeviceTrainTransform(stats, num_frames=args.num_frames, persons="first", seed=0)
    tf(batches[0])
    sync(device)
    n, t0 = 0, time.perf_counter()
    for b in batches:
        tf(b)
        n += int(b["label"].shape[0])
    sync(device)
    wall = time.perf_counter() - t0
    return {"samples": n, "wall_s": wall, "samples_per_s": n / max(wall, 1e-9), "device": str(device)}


def through_ray(data_dir, args, path: str, stats, device: torch.device, epoch: int, cache: dict) -> dict:
    """One pass of the Ray Data pipeline (built once per path, reused across rounds: a new pass per round)."""
    from macdiff_ray.data.device_transforms import DeviceTrainTransform
    from macdiff_ray.data.pipeline import iter_torch, make_dataset

    if path not in cache:
        transform = "auto" if path == "cpu transform" else "decode"
        cache[path] = make_dataset(data_dir, args.benchmark, "train", train=True, num_frames=args.num_frames,
                                   seed=0, persons="first", transform=transform)
    tf = DeviceTrainTransform(stats, num_frames=args.num_frames, persons="first", seed=epoch)
    n, t0 = 0, time.perf_counter()
    for b in iter_torch(cache[path], args.batch_size, shuffle=True, seed=epoch):
        if path == "decode only":
            tf({k: v.to(device) for k, v in b.items()})
        n += int(b["label"].shape[0])
    wall = time.perf_counter() - t0
    return {"samples": n, "wall_s": wall, "samples_per_s": n / max(wall, 1e-9),
            "samples_per_s_per_cpu": n / max(wall, 1e-9) / args.num_cpus}


def gpu_node(cluster_yaml: Path) -> dict | None:
    """CPU count of the first node type with a GPU in cluster.yaml, and the CPU one Train worker reserves."""
    try:
        import yaml

        from macdiff_ray.train.config import PretrainConfig

        spec = yaml.safe_load(cluster_yaml.read_text())
    except Exception as e:  # noqa: BLE001 - no yaml, no file: the arithmetic is left out, with the reason
        return {"error": f"{cluster_yaml}: {e}"}
    for name, node in (spec.get("available_node_types") or {}).items():
        res = node.get("resources") or {}
        if res.get("GPU", 0) > 0:
            return {"node_type": name, "instance": (node.get("node_config") or {}).get("InstanceType"),
                    "cpus": float(res.get("CPU", 0)), "gpus": float(res["GPU"]),
                    "train_worker_cpus": PretrainConfig().cpus_per_worker}
    return None


def arithmetic(summary: dict, node: dict | None, gpu_rate: float) -> dict:
    out = {"gpu_rate": gpu_rate, "gpu_rate_is": "a target (issue 16), not a measurement"}
    if not node or "cpus" not in node:
        return dict(out, node=node)
    free = node["cpus"] - node["train_worker_cpus"]
    out["node"] = node
    out["data_cores_on_node"] = free
    for path, s in summary.items():
        per_core = s["samples_per_cpu_s"]
        need = gpu_rate / per_core
        out[path] = {"samples_per_cpu_s": per_core, "cores_needed": need, "node_delivers": per_core * free,
                     "keeps_up": per_core * free >= gpu_rate}
    return out


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(1)
    device = torch.device(args.device)
    from macdiff_ray.data.pipeline import dataset_stats
    from macdiff_ray.data.transforms import TrainTransform

    result: dict = {"date": dt.datetime.now().isoformat(timespec="seconds"), "host": platform.node(),
                    "cpu_count": os.cpu_count(), "load_avg_1min": os.getloadavg()[0], "torch": torch.__version__}
    with tempfile.TemporaryDirectory(prefix="macdiff_per_core_") as tmp:
        data_dir = args.data
        if args.smoke_test:
            from macdiff_ray.data.prepare import prepare_dataset

            data_dir = Path(tmp) / "synthetic"
            prepare_dataset("synthetic", None, data_dir, progress=False,
                            synthetic_options={"num_samples": 120, "num_classes": 4, "seed": 0})
            args.benchmark, args.rounds, args.batch_size, args.num_frames = "synthetic", 1, 16, 32
        elif data_dir is None:
            from macdiff_ray.data.prepare import prepare_dataset

            if not args.source.is_dir():
                sys.exit(f"NW-UCLA source not found: {args.source} (pass --data or --source)")
            data_dir = Path(tmp) / "ucla"
            prepare_dataset("ucla", args.source, data_dir, progress=False)
        stats = dataset_stats(data_dir, args.benchmark)
        cpu_tf = TrainTransform(stats, num_frames=args.num_frames, persons="first", seed=0)
        from macdiff_ray.data.shard_reader import ShardBatches

        # warm-up outside the timing: the first call imports what the transform reads (Ray's DataContext)
        first = next(iter(ShardBatches(str(data_dir), args.benchmark, "train", batch_size=args.batch_size,
                                       shuffle=False).epoch(0)))
        cpu_tf({k: v.numpy() for k, v in first.items()})
        result.update(data=str(data_dir), benchmark=args.benchmark, batch_size=args.batch_size,
                      num_frames=args.num_frames, rounds=args.rounds)
        print(f"{result['date']} {result['host']}: {args.benchmark} train split, batch {args.batch_size}, "
              f"T0 {args.num_frames}, {args.rounds} interleaved rounds, load avg {result['load_avg_1min']:.2f}")
        paths = ("cpu transform", "decode only")
        rounds: list[dict] = []
        ray_started, cache = False, {}
        if not args.skip_ray:
            import ray

            if not ray.is_initialized():
                ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False,
                         runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
                ray_started = True
                from ray.data import DataContext

                DataContext.get_current().enable_progress_bars = False
        try:
            for r in range(args.rounds):
                row = {}
                for path in paths:
                    row[path] = {"in_process": in_process(data_dir, args, path, cpu_tf, r)}
                    if not args.skip_ray:
                        row[path]["ray"] = through_ray(data_dir, args, path, stats, device, r, cache)
                    ip = row[path]["in_process"]
                    ray_txt = (f"; Ray Data {row[path]['ray']['samples_per_s']:.0f} samples/s = "
                               f"{row[path]['ray']['samples_per_s_per_cpu']:.0f} per logical CPU"
                               if "ray" in row[path] else "")
                    print(f"  round {r + 1} {path:13s}: {ip['samples_per_cpu_s']:7.0f} samples per CPU-second "
                          f"({ip['samples_per_s']:.0f} samples/s wall){ray_txt}")
                rounds.append(row)
        finally:
            if ray_started:
                import ray

                ray.shutdown()
        result["rounds"] = rounds
        result["device_transform"] = device_transform_rate(data_dir, args, stats, device)
    summary = {}
    for path in paths:
        ip = [r[path]["in_process"] for r in rounds]
        summary[path] = {"samples_per_cpu_s": statistics.median(x["samples_per_cpu_s"] for x in ip),
                         "samples_per_s_wall": statistics.median(x["samples_per_s"] for x in ip)}
        if not args.skip_ray:
            summary[path]["ray_samples_per_s_per_cpu"] = statistics.median(
                r[path]["ray"]["samples_per_s_per_cpu"] for r in rounds)
    result["summary"] = summary
    result["arithmetic"] = arithmetic(summary, gpu_node(args.cluster_yaml), args.gpu_rate)
    dtf = result["device_transform"]
    print(f"RESULT per core (median over rounds): cpu transform {summary['cpu transform']['samples_per_cpu_s']:.0f}, "
          f"decode only {summary['decode only']['samples_per_cpu_s']:.0f} samples per CPU-second; device transforms "
          f"on {dtf['device']}: {dtf['samples_per_s']:.0f} samples/s")
    a = result["arithmetic"]
    if "data_cores_on_node" in a:
        n = a["node"]
        print(f"arithmetic: {n['node_type']} ({n['instance']}) has {n['cpus']:g} CPUs, {a['data_cores_on_node']:g} "
              f"left after its Train worker; to feed {a['gpu_rate']:.0f} samples/s ({a['gpu_rate_is']}):")
        for path in paths:
            p = a[path]
            print(f"  {path:13s}: {p['cores_needed']:.1f} cores needed; the node's cores deliver "
                  f"{p['node_delivers']:.0f} samples/s -> {'keeps up' if p['keeps_up'] else 'does NOT keep up'}")
    if args.out:
        from macdiff_ray.train.perf import write_figures

        write_figures(args.out, result)
    return result


if __name__ == "__main__":
    main()
