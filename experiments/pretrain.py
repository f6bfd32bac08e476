"""Pretrain MacDiff on Ray Train.

    python experiments/pretrain.py --data DIR --benchmark NAME --preset P [--method M] --output RUN_DIR \
        [--num-workers N] [--use-gpu auto|yes|no] [--epochs E] [--batch-size B] [--lr LR] [--config F] [--smoke-test]

``--config F`` (JSON/YAML, the format sweeps write: PretrainConfig keys, nested ``diffusion``) is read first;
flags given on the command line override it; unknown keys are errors. Re-running the same command with the same
``--output`` resumes from the newest checkpoint. Without RAY_ADDRESS a local Ray is started; with it (or under
``ray job submit``) the cluster is joined. ``--smoke-test``: tiny preset, synthetic data in a temp dir when
``--data`` is absent, 2 short epochs. ``--method`` pretrains a baseline of the paper's tables with the same code:
``ddim`` (the decoder alone, unconditional, eps), ``mdm`` (the same, x0), ``mdm_orig`` (mdm with temporal-only
attention), ``mae`` (coordinates of masked tokens, no diffusion), ``mamp`` (motion of masked tokens, motion-aware
masking, no diffusion); default ``macdiff``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from macdiff_ray import console  # noqa: E402
from macdiff_ray.cli import (  # noqa: E402
    add_console_flags, merge_values, mlflow_line, parser, smoke_dataset, start_console,
)
from macdiff_ray.config import ConfigError, from_dict  # noqa: E402
from macdiff_ray.model.config import METHOD_PRESETS  # noqa: E402
from macdiff_ray.train import PretrainConfig, run_pretrain, smoke_overrides  # noqa: E402
from macdiff_ray.train.tracking import add_flags as add_tracking_flags  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = parser(
        __doc__.split("\n\n")[0],
        "python experiments/pretrain.py --data runs/quickstart/data --benchmark synthetic --preset tiny "
        "--epochs 20 --batch-size 32 --output runs/pretrain_tiny",
        "RUN_DIR/config.json, results.json, checkpoints/epoch_XXXXX/, tb/ (TensorBoard events), ray.log (Ray's "
        "internal logging); with --mlflow also RUN_DIR/mlflow.db and mlartifacts/ (or the --mlflow-uri server)",
    )
    p.add_argument("--data", dest="data_dir", help="prepared dataset directory")
    p.add_argument("--benchmark", help="benchmark name, e.g. ucla-xview, ntu60-xsub")
    p.add_argument("--preset", choices=("paper", "small", "tiny"))
    p.add_argument("--method", choices=METHOD_PRESETS,
                   help="objective: macdiff (default) or a baseline preset of the same code (ddim, mdm, mdm_orig, "
                        "mae, mamp)")
    p.add_argument("--output", help="run directory (or s3:// URI); re-use it to resume")
    p.add_argument("--num-workers", dest="num_workers", type=int)
    p.add_argument("--use-gpu", dest="use_gpu", choices=("auto", "yes", "no"))
    p.add_argument("--epochs", type=int)
    p.add_argument("--budget-minutes", dest="budget_minutes", type=float,
                   help="wall-clock budget: the lr follows a cosine over the time, the run stops inside it "
                        "(--epochs is then the cap)")
    p.add_argument("--batch-size", dest="batch_size", type=int, help="GLOBAL batch size")
    p.add_argument("--lr", type=float, help="base lr at lr_reference_batch (128), scaled linearly by default")
    p.add_argument("--seed", type=int)
    p.add_argument("--checkpoint-every", dest="checkpoint_every", type=int,
                   help="epochs between checkpoints (default 1: a lost spot node costs at most one epoch)")
    p.add_argument("--max-failures", dest="max_failures", type=int,
                   help="restarts after worker/node errors (default 2); preemptions Ray is told of retry without limit")
    p.add_argument("--cpu-precision", dest="cpu_precision", choices=("auto", "fp32", "bf16"),
                   help="CPU training precision: bf16 autocast of the forward pass, fp32, or auto (default: bf16 "
                        "on a CPU with native bf16, fp32 otherwise)")
    p.add_argument("--transform-device", dest="transform_device", choices=("cpu", "train"),
                   help="where the training transforms run: cpu (Ray Data tasks, default) or train (Ray Data only "
                        "decodes; crop, rotation, noise and normalisation run batched on the training device)")
    p.add_argument("--log-every", dest="log_every", type=int,
                   help="steps between host reads of the loss (default 10; the NaN check runs at each read)")
    p.add_argument("--config", help="JSON/YAML file of PretrainConfig keys")
    p.add_argument("--smoke-test", action="store_true", help="tiny, fast run (synthetic data if --data absent)")
    add_console_flags(p)
    add_tracking_flags(p)
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
    start_console(args, cfg.output)
    results = run_pretrain(cfg)
    rate, out = results["samples_per_s_mean"], results["config"]["output"]
    console.summary(
        f"pretraining done: {results['final_epoch']} epochs, final loss {results['final_loss']:.4f}, "
        f"{rate or 0:.1f} samples/s, {results['wall_time_s']:.0f} s",
        {"results": f"{out}/results.json", "checkpoint": results["checkpoint"],
         "TensorBoard": f"tensorboard --logdir {out}/tb", "MLflow": mlflow_line(results.get("mlflow"))},
    )
    console.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
