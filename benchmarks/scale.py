"""Scale benchmark: an NTU-120-sized synthetic dataset streamed through the Ray Data pipeline (issue 16).

    python benchmarks/scale.py --workdir /data/scale --out runs/scale.json            # full size (not yet run)
    python benchmarks/scale.py --sequences 20000 --step none --out runs/scale_20k.json
    python benchmarks/scale.py --sequences 300 --shard-rows 100 --step none            # seconds (the test's size)

1. **Generate** ``--sequences`` (default 114,480, NTU-120's count) sequences of 25 joints, up to ``--max-frames``
   (300) frames and 2 persons straight into Parquet shards, shard by shard (``--shard-rows`` rows in memory at a
   time, a progress bar): NTU-style names ``SsssCcccPpppRrrrAaaa`` drawn without repeats over 32 setups x 3 cameras
   x 106 performers x 2 replications x 120 actions, so the ``ntu120-*`` and ``ntu60-*`` benchmarks select rows as
   they do on the real set; the 26 mutual actions (A050-A060, A106-A120) have 2 persons, the rest 1; lengths
   log-normal around 80 frames, clipped to [16, max_frames]; each person is one of 64 procedural bodies of the
   ``synthetic`` format (data/formats/synthetic.py) resampled in time, scaled, turned and placed. The manifest
   (split counts, training statistics, length statistics) is accumulated on the way, as ``prepare_data.py``
   would write it, and written last.
2. **Stream one pretraining epoch** of ``--benchmark``'s training split through ``make_dataset`` (streaming
   Parquet reads, ``TrainTransform`` in Ray Data tasks) and ``iter_torch`` in this driver, with ``--step
   tiny|small|paper`` a training step of that preset per batch (``train.loop.train_epoch``), or ``--step none``
   (the data path alone). A sampler thread reads ``VmRSS`` / ``VmHWM`` of this process and of every descendant
   (raylet, GCS, Ray workers) from /proc every ``--sample-s`` seconds.
3. **Report** samples/s, the epoch's wall time, the dataset's size on disk and decoded (float32, padded), and
   the peak resident memory of every process, then delete the data unless ``--keep``.

RSS counts the shared object-store pages a process has mapped in each process that touched them, so the sum
over processes overstates the memory in use; the per-process peaks are the figures to compare with the dataset.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np  # noqa: E402

NTU120_SEQUENCES = 114_480
MUTUAL_ACTIONS = frozenset(range(50, 61)) | frozenset(range(106, 121))  # 1-based NTU-120 two-person actions
GRID = (32, 3, 106, 2, 120)  # setups, cameras, performers, replications, actions
POOL = 64  # procedural bodies resampled into every sequence


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sequences", type=int, default=NTU120_SEQUENCES)
    p.add_argument("--max-frames", type=int, default=300)
    p.add_argument("--shard-rows", type=int, default=512, help="rows per shard (and in memory while generating)")
    p.add_argument("--workdir", type=Path, help="where the dataset is written (default: a temp folder)")
    p.add_argument("--keep", action="store_true", help="keep the generated dataset")
    p.add_argument("--benchmark", default="ntu120-xsub")
    p.add_argument("--step", choices=("none", "tiny", "small", "paper"), default="tiny",
                   help="training step per batch in the driver (none: the data path alone)")
    p.add_argument("--num-frames", type=int, default=120)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: the machine's)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the driver's training step")
    p.add_argument("--sample-s", type=float, default=0.5, help="seconds between memory samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="JSON of every figure")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------------- generation
def sample_names(n: int, seed: int) -> list[str]:
    """n distinct NTU-style names, sorted (shards hold rows in sample_id order, as prepare_data writes them)."""
    if n > int(np.prod(GRID)):
        raise ValueError(f"--sequences {n} exceeds the {int(np.prod(GRID))} distinct NTU-style names")
    idx = np.sort(np.random.default_rng([seed, 1]).choice(int(np.prod(GRID)), size=n, replace=False))
    s, c, p, r, a = np.unravel_index(idx, GRID)
    return [f"S{s_ + 1:03d}C{c_ + 1:03d}P{p_ + 1:03d}R{r_ + 1:03d}A{a_ + 1:03d}"
            for s_, c_, p_, r_, a_ in zip(s, c, p, r, a)]


def body_pool(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(POOL, 64, 25, 3) procedural one-person motions (zero-padded) and their lengths (POOL,)."""
    from macdiff_ray.data.formats.synthetic import generate_sample

    xs = np.zeros((POOL, 64, 25, 3), np.float32)
    lengths = np.zeros(POOL, np.int64)
    for i in range(POOL):
        x = generate_sample(i, seed, num_classes=12, num_subjects=10, noise_std=0.01).x[0]  # (T, 25, 3)
        xs[i, :len(x)], lengths[i] = x, len(x)
    return xs, lengths


def make_person(pool, rng, length: int, offset_x: float) -> np.ndarray:
    """One person (length, 25, 3): a pool body resampled linearly to ``length`` frames, scaled, turned, placed."""
    xs, lens = pool
    k = int(rng.integers(POOL))
    src = np.clip((np.arange(length) + 0.5) * lens[k] / length - 0.5, 0, lens[k] - 1)  # (T,)
    i0 = np.floor(src).astype(np.int64)
    w = (src - i0)[:, None, None]
    i1 = np.minimum(i0 + 1, lens[k] - 1)
    x = xs[k, i0] * (1 - w) + xs[k, i1] * w  # (T, 25, 3)
    yaw = rng.uniform(-0.5, 0.5)
    c, s = np.cos(yaw), np.sin(yaw)
    rot = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    x = (x * rng.uniform(0.9, 1.1)) @ rot.T
    x[..., 0] += offset_x
    return x.astype(np.float32)


def generate(out_dir: Path, args: argparse.Namespace) -> dict:
    """Write the shards and then the manifest; returns the manifest. Memory: one shard of rows at a time."""
    from tqdm.auto import tqdm

    from macdiff_ray import __version__
    from macdiff_ray.data.benchmarks import SPLITS, benchmarks_for_dataset, parse_ntu_name, split_of
    from macdiff_ray.data.layouts import NTU25
    from macdiff_ray.data.lengths import length_stats
    from macdiff_ray.data.manifest import MANIFEST_NAME, SCHEMA_VERSION, sha256_file
    from macdiff_ray.data.samples import RawSample
    from macdiff_ray.data.shards import samples_to_table, write_shard

    (out_dir / "shards").mkdir(parents=True, exist_ok=False)
    names = sample_names(args.sequences, args.seed)
    pool = body_pool(args.seed)
    benches = benchmarks_for_dataset("ntu120")
    counts = {b: {"train": 0, "test": 0} for b in benches}
    moments = {b: np.zeros((3, 3)) for b in benches}  # rows: count, sum, sum of squares, per coordinate
    lengths, which = [], {b: [] for b in benches}
    shards = []
    rng = np.random.default_rng([args.seed, 2])
    bar = tqdm(total=len(names), desc="generate", unit="seq", dynamic_ncols=True, mininterval=1.0)
    for k, a in enumerate(range(0, len(names), args.shard_rows)):
        samples = []
        for name in names[a:a + args.shard_rows]:
            meta = parse_ntu_name(name)
            length = int(np.clip(np.rint(np.exp(rng.normal(np.log(80), 0.5))), 16, args.max_frames))
            persons = 2 if meta["label"] + 1 in MUTUAL_ACTIONS else 1
            x = np.stack([make_person(pool, rng, length, 0.9 * m) for m in range(persons)])  # (M, T, 25, 3)
            samples.append(RawSample(name, x, meta["label"], meta["subject"], meta["view"], meta["setup"],
                                     meta["replication"]))
            lengths.append(length)
            pts = x.reshape(-1, 3).astype(np.float64)  # every joint of every (person, frame) is tracked here
            for b in benches:
                sp = split_of(b, dict(meta, split=""))
                which[b].append(sp)
                if sp is not None:
                    counts[b][sp] += 1
                if sp == "train":
                    moments[b] += np.stack([np.full(3, len(pts)), pts.sum(0), (pts ** 2).sum(0)])
        table = samples_to_table(samples, 2, args.max_frames, 25, 3)  # (rows, 2, T_max, 25, 3) padded
        rel = f"shards/part-{k:05d}.parquet"
        write_shard(table, out_dir / rel)
        shards.append({"path": rel, "rows": table.num_rows, "sha256": sha256_file(out_dir / rel)})
        bar.update(len(samples))
        del samples, table
    bar.close()
    stats = {}
    for b, (n, s1, s2) in moments.items():
        if n[0] > 0:
            mean = s1 / n
            stats[b] = {"mean": mean.tolist(), "std": np.sqrt(np.maximum(s2 / n - mean ** 2, 1e-12)).tolist()}
    manifest = {
        "schema_version": SCHEMA_VERSION, "source_format": "scale-synthetic", "dataset": "ntu120",
        "layout": NTU25.to_dict(), "num_classes": 120, "class_names": None, "max_persons": 2,
        "max_frames": int(args.max_frames), "num_joints": 25, "channels": 3, "units": "m",
        "num_samples": len(names), "split_counts": counts, "stats": stats,
        "lengths": {"all": length_stats(lengths), "splits": {
            b: {sp: length_stats([n for n, w in zip(lengths, which[b]) if w == sp]) for sp in SPLITS}
            for b in benches}},
        "fps": 30, "shards": shards, "skipped": [], "created_by": f"macdiff_ray {__version__} benchmarks/scale.py",
    }
    (out_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


# ---------------------------------------------------------------------------------------------------- memory
def _proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process /proc shows."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            out[int(entry)] = (ppid, cmd)
        except (OSError, ValueError, IndexError):
            continue
    return out


def _status(pid: int) -> tuple[int | None, int | None]:
    rss = hwm = None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss, hwm


_ROLES = (("default_worker.py", "ray worker (starting)"), ("dashboard/agent.py", "dashboard_agent"),
          ("runtime_env/agent", "runtime_env_agent"), ("log_monitor.py", "log_monitor"),
          ("autoscaler/_private/monitor.py", "monitor"), ("dashboard/dashboard.py", "dashboard"))


def _role(pid: int, cmd: str, root: int) -> str:
    """driver, raylet, gcs_server, ray::<task> (a worker names its current task), or the Ray helper it is."""
    if pid == root:
        return "driver"
    if cmd.startswith("ray::"):
        return cmd.split()[0]  # ray::IDLE, ray::ReadParquet->MapBatches(TrainTransform), ...
    prog = cmd.split()[0].rsplit("/", 1)[-1] if cmd else "?"
    if prog in ("raylet", "gcs_server"):
        return prog
    for key, role in _ROLES:
        if key in cmd:
            return role
    return prog


class MemorySampler(threading.Thread):
    """Peak VmRSS (sampled) and VmHWM (the kernel's own peak) of this process and all its descendants."""

    def __init__(self, every_s: float):
        super().__init__(daemon=True)
        self.every_s, self.root = every_s, os.getpid()
        self.procs: dict[int, dict] = {}
        self.peak_total_rss = 0
        self._stop_event = threading.Event()

    def sample(self) -> None:
        table = _proc_table()
        children: dict[int, list[int]] = {}
        for pid, (ppid, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        todo, seen = [self.root], set()
        while todo:
            pid = todo.pop()
            if pid in seen:
                continue
            seen.add(pid)
            todo.extend(children.get(pid, []))
        total = 0
        for pid in seen:
            rss, hwm = _status(pid)
            if rss is None:
                continue
            total += rss
            cmd = table.get(pid, (0, ""))[1]
            rec = self.procs.setdefault(pid, {"pid": pid, "role": _role(pid, cmd, self.root), "peak_rss": 0,
                                              "hwm": 0})
            role = _role(pid, cmd, self.root)
            if role.startswith("ray::") and role != "ray::IDLE":  # a worker keeps the name of its busiest task
                rec["role"] = role
            rec["peak_rss"] = max(rec["peak_rss"], rss)
            rec["hwm"] = max(rec["hwm"], hwm or 0)
        self.peak_total_rss = max(self.peak_total_rss, total)

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.every_s)

    def stop(self) -> list[dict]:
        self._stop_event.set()
        self.join()
        self.sample()
        return sorted(self.procs.values(), key=lambda r: -r["hwm"])


# ---------------------------------------------------------------------------------------------------- streaming
def _train_count(data_dir: Path, benchmark: str) -> int:
    from macdiff_ray.data.manifest import load_manifest

    return int(load_manifest(str(data_dir))["split_counts"][benchmark]["train"])


def _with_bar(batches, total_steps: int, desc: str):
    """The batches, unchanged, with a progress bar of the epoch (batches and samples/s) on stderr."""
    from tqdm.auto import tqdm

    with tqdm(total=total_steps, desc=desc, unit="batch", dynamic_ncols=True, mininterval=1.0) as bar:
        for batch in batches:
            yield batch
            bar.update(1)


def stream_epoch(data_dir: Path, args: argparse.Namespace) -> dict:
    import torch

    from macdiff_ray.data.pipeline import iter_torch, make_dataset

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    ds = make_dataset(data_dir, args.benchmark, "train", train=True, num_frames=args.num_frames, seed=args.seed,
                      persons="first")
    build_s = time.perf_counter() - t0
    batches = _with_bar(iter_torch(ds, args.batch_size, shuffle=True, drop_last=True, seed=args.seed),
                        _train_count(data_dir, args.benchmark) // args.batch_size,
                        f"epoch ({'data path only' if args.step == 'none' else args.step + ' step'})")
    t0 = time.perf_counter()
    if args.step == "none":
        samples = steps = 0
        for batch in batches:
            samples += int(batch["x"].shape[0])
            steps += 1
        out = {"samples": samples, "steps": steps}
    else:
        from macdiff_ray.diffusion import DiffusionConfig, make_schedule
        from macdiff_ray.model import MacDiff, model_preset
        from macdiff_ray.train.loop import DiffusionLoss, train_epoch
        from macdiff_ray.train.optim import WarmupCosine, build_optimizer

        torch.manual_seed(args.seed)
        net = MacDiff(model_preset(args.step, num_joints=25, num_frames=args.num_frames))
        model = DiffusionLoss(net, make_schedule(DiffusionConfig()))
        opt = build_optimizer(net, 1e-3 * args.batch_size / 128, 0.05, (0.9, 0.95))
        m = train_epoch(model, opt, batches, lr_schedule=WarmupCosine(5e-4, 1e-5, 100, 10**7), start_step=0,
                        max_steps=10**9, epoch=0, device=torch.device("cpu"))
        out = {"samples": m["samples"], "steps": m["steps"], "loss": m["loss"]}
    wall = time.perf_counter() - t0
    return dict(out, wall_s=wall, samples_per_s=out["samples"] / wall if wall > 0 else 0.0,
                dataset_build_s=build_s, step=args.step, batch_size=args.batch_size, num_frames=args.num_frames)


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv=None) -> dict:
    args = parse_args(argv)
    import ray

    root = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="macdiff_scale_"))
    data_dir = root / f"ntu120_synthetic_{args.sequences}"
    result: dict = {"date": dt.datetime.now().isoformat(timespec="seconds"), "host": platform.node(),
                    "cpu_count": os.cpu_count(), "load_avg_1min": os.getloadavg()[0], "ray": ray.__version__,
                    "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    sampler = MemorySampler(args.sample_s)
    sampler.start()
    started_ray = False
    try:
        t0 = time.perf_counter()
        manifest = generate(data_dir, args)
        gen_s = time.perf_counter() - t0
        decoded = args.sequences * 2 * args.max_frames * 25 * 3 * 4
        result["dataset"] = {"path": str(data_dir), "sequences": args.sequences, "shards": len(manifest["shards"]),
                             "disk_bytes": _dir_bytes(data_dir), "decoded_float32_bytes": decoded,
                             "split_counts": manifest["split_counts"][args.benchmark], "generate_s": gen_s,
                             "generator_peak_rss_bytes": _status(os.getpid())[1]}
        print(f"generated {args.sequences} sequences in {gen_s:.0f} s: {len(manifest['shards'])} shards, "
              f"{result['dataset']['disk_bytes'] / 2**30:.2f} GiB on disk, {decoded / 2**30:.2f} GiB decoded "
              f"(float32, padded to 2 x {args.max_frames} frames)")
        if not ray.is_initialized():
            ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
            started_ray = True
            from ray.data import DataContext

            DataContext.get_current().enable_progress_bars = False
        result["epoch"] = stream_epoch(data_dir, args)
        e = result["epoch"]
        print(f"one epoch of {args.benchmark}/train, step {args.step}: {e['samples']} samples in {e['wall_s']:.1f} s "
              f"= {e['samples_per_s']:.1f} samples/s")
    finally:
        procs = sampler.stop()
        if started_ray:
            ray.shutdown()
        if not args.keep and data_dir.exists():
            shutil.rmtree(data_dir)
            if not args.workdir:
                shutil.rmtree(root, ignore_errors=True)
    result["processes"] = procs
    result["peak_total_rss_bytes"] = sampler.peak_total_rss
    result["kept"] = bool(args.keep)
    decoded = result.get("dataset", {}).get("decoded_float32_bytes")
    print(f"peak resident memory per process (VmHWM; {len(procs)} processes; sum of sampled RSS at its peak "
          f"{sampler.peak_total_rss / 2**30:.2f} GiB, shared object-store pages counted in each process):")
    for r in procs[:12]:
        share = f", {r['hwm'] / decoded:.1%} of the decoded dataset" if decoded else ""
        print(f"  {r['role'][:60]:60s} pid {r['pid']:7d}: {r['hwm'] / 2**20:8.0f} MiB{share}")
    print(f"data {'kept at ' + str(data_dir) if args.keep else 'deleted'}")
    if args.out:
        from macdiff_ray.train.perf import write_figures

        write_figures(args.out, result)
    return result


if __name__ == "__main__":
    main()
