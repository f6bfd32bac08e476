"""Hyperparameter sweeps with Ray Tune (pretraining or fine-tuning augmentation), defined by a space file.

    python experiments/sweep.py --space configs/sweeps/tau.yaml --data DIR --output OUT [--resume auto|never|force]
        [--checkpoint CKPT]   # augment sweeps: the pretrained checkpoint to fine-tune

The space file (YAML/JSON; format in macdiff_ray/tune/space.py) holds ``kind``, ``base`` (config keys), ``search``
(dotted parameter -> distribution) and ``tune`` (metric, scheduler, resources per trial, ...). Unknown keys are
errors. ``--data``/``--benchmark``/``--checkpoint`` set the matching ``base`` keys. Re-running the same command on
the same OUT resumes an interrupted sweep (``Tuner.restore``). Results: OUT/results.md, OUT/results.csv (ranked),
OUT/best_config.json (``python experiments/pretrain.py --config OUT/best_config.json --output RUN``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from macdiff_ray import storage  # noqa: E402
from macdiff_ray import console  # noqa: E402
from macdiff_ray.cli import add_console_flags, parser, smoke_dataset, start_console  # noqa: E402
from macdiff_ray.config import ConfigError, from_dict  # noqa: E402
from macdiff_ray.train.tracking import TrackingConfig, add_flags, from_flags  # noqa: E402
from macdiff_ray.tune.space import load_space, parse_space  # noqa: E402


def smoke_space(data_dir: str) -> dict:
    """``--smoke-test``: 2 trials (tau -1 and 1) of the tiny preset on a small synthetic set, 2 short epochs each,
    FIFO, kNN proxy."""
    return {
        "kind": "pretrain",
        "base": {"data_dir": data_dir, "benchmark": "synthetic", "preset": "tiny", "epochs": 2, "batch_size": 16,
                 "max_steps_per_epoch": 2, "num_frames": 32, "warmup_epochs": 1.0, "checkpoint_every": 1,
                 "keep_checkpoints": 1, "use_gpu": "no", "smoke_test": True},
        "search": {"diffusion.tau": {"grid": [-1.0, 1.0]}},
        "tune": {"metric": "knn_top1", "mode": "max", "scheduler": "fifo", "max_concurrent": 1,
                 "resources": {"cpu": 1, "gpu": 0}, "knn_max_train": 64},
    }


def parse_args(argv=None) -> argparse.Namespace:
    p = parser(
        __doc__.split("\n\n")[0],
        "python experiments/sweep.py --space configs/sweeps/tau.yaml --data prepared/ucla --output runs/sweep_tau",
        "OUT/results.md and results.csv (ranked trials), OUT/best_config.json, OUT/summary.json, OUT/sweep/ (Tune "
        "trial folders, each with its run), OUT/ray.log; with --mlflow a parent run and one child run per trial "
        "(local store OUT/mlflow.db unless --mlflow-uri)",
    )
    p.add_argument("--space", help="search-space file (YAML/JSON); required unless --smoke-test")
    p.add_argument("--output", help="sweep directory; re-use it to resume (--smoke-test: a temp folder)")
    p.add_argument("--smoke-test", action="store_true",
                   help="a 2-trial sweep of the tiny preset on synthetic data (about a minute)")
    p.add_argument("--data", dest="data_dir", help="prepared dataset directory (sets base.data_dir)")
    p.add_argument("--benchmark", help="sets base.benchmark")
    p.add_argument("--checkpoint", help="augment sweeps: pretrained checkpoint (sets base.checkpoint)")
    p.add_argument("--resume", choices=("auto", "never", "force"), default="auto")
    p.add_argument("--validate-only", action="store_true", help="check the space file and exit")
    add_console_flags(p)
    add_flags(p)
    a = p.parse_args(argv)
    if not a.smoke_test and (not a.space or not a.output):
        p.error("--space and --output are required (or --smoke-test)")
    return a


def main(argv=None) -> int:
    args = parse_args(argv)
    overrides = {k: v for k, v in (("data_dir", args.data_dir), ("benchmark", args.benchmark),
                                   ("checkpoint", args.checkpoint)) if v is not None}
    try:
        if args.smoke_test and not args.space:
            space = parse_space(smoke_space(args.data_dir or smoke_dataset(num_samples=64)), "--smoke-test")
        else:
            space = load_space(args.space, overrides)
        if args.validate_only:
            print(f"{args.space}: valid ({space.kind}, {len(space.params)} searched parameter(s))")
            return 0
        from macdiff_ray.tune.sweep import run_sweep

        output = args.output or tempfile.mkdtemp(prefix="macdiff_smoke_sweep_")
        section = from_flags(args.mlflow, args.mlflow_uri, args.mlflow_experiment)
        start_console(args, output)
        summary = run_sweep(space, output, resume=args.resume, quiet=False, progress=True,
                            tracking=from_dict(TrackingConfig, section) if section else None)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    print(storage.read_bytes(summary["table_md"]).decode())
    counts = ", ".join(f"{v} {k}" for k, v in summary["status_counts"].items() if v)
    mlflow = summary.get("mlflow")
    console.summary(
        f"sweep done: {summary['num_trials']} trials ({counts}), {summary['wall_time_s']:.0f} s"
        + (" (resumed)" if summary["restored"] else ""),
        {"ranked table": summary["table_md"], "best config": summary["best_config"],
         "summary": storage.join(output, "summary.json"),
         "MLflow": (f"parent run {mlflow['parent_run_id']} in {mlflow['experiment']!r} at {mlflow['tracking_uri']}"
                    if mlflow else None)},
    )
    console.close()
    return 1 if summary["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
