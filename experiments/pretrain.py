"""Pretrain MacDiff on Ray Train.

    python experiments/pretrain.py --data DIR --benchmark NAME --preset P --output RUN_DIR \
        [--num-workers N] [--use-gpu auto|yes|no] [--epochs E] [--batch-size B] [--lr LR] [--config F] [--smoke-test]

``--config F`` (JSON/YAML, the format sweeps write: PretrainConfig keys, nested ``diffusion``) is read first;
flags given on the command line override it; unknown keys are errors. Re-running the same command with the same
``--output`` resumes from the newest checkpoint. Without RAY_ADDRESS a local Ray is started; with it (or under
``ray job submit``) the cluster is joined. ``--smoke-test``: tiny preset, synthetic data in a temp dir when
``--data`` is absent, 2 short epochs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from macdiff_ray.cli import merge_values, smoke_dataset  # noqa: E402
from macdiff_ray.config import ConfigError, from_dict  # noqa: E402
from macdiff_ray.train import PretrainConfig, run_pretrain, smoke_overrides  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", dest="data_dir", help="prepared dataset directory")
    p.add_argument("--benchmark", help="benchmark name, e.g. ucla-xview, ntu60-xsub")
    p.add_argument("--preset", choices=("paper", "small", "tiny"))
    p.add_argument("--output", help="run directory (or s3:// URI); re-use it to resume")
    p.add_argument("--num-workers", dest="num_workers", type=int)
    p.add_argument("--use-gpu", dest="use_gpu", choices=("auto", "yes", "no"))
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", dest="batch_size", type=int, help="GLOBAL batch size")
    p.add_argument("--lr", type=float, help="base lr at lr_reference_batch (128), scaled linearly by default")
    p.add_argument("--seed", type=int)
    p.add_argument("--config", help="JSON/YAML file of PretrainConfig keys")
    p.add_argument("--smoke-test", action="store_true", help="tiny, fast run (synthetic data if --data absent)")
    return p.parse_args(argv)


def build_config(args: argparse.Namespace) -> PretrainConfig:
    values = merge_values(args, smoke_overrides())
    if args.smoke_test:
        if "data_dir" not in values:
            values["data_dir"] = smoke_dataset()
            values.setdefault("benchmark", "synthetic")
        values.setdefault("output", tempfile.mkdtemp(prefix="macdiff_smoke_run_"))
    return from_dict(PretrainConfig, values)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = build_config(args)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    results = run_pretrain(cfg)
    keys = ("final_epoch", "final_loss", "samples_per_s_mean", "wall_time_s", "checkpoint")
    print(json.dumps({k: results[k] for k in keys}, indent=2))
    print(f"run directory: {cfg.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
