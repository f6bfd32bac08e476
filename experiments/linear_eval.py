"""Linear probe (or kNN probe) of a frozen encoder on Ray Train.

    python experiments/linear_eval.py --data DIR --benchmark ucla-xview --checkpoint RUN_OR_CKPT --output RUN_DIR
        [--feature pooled|per_joint|raw] [--random-init --preset P] [--joint-map FILE] [--epochs E]
        [--batch-size B] [--lr LR] [--num-frames T] [--num-workers N] [--use-gpu auto|yes|no]
        [--labeled-fraction p] [--label NAME] [--config F] [--smoke-test] [--knn [--k K]]

``--feature raw`` probes normalised coordinates (no encoder); ``--random-init --preset P`` an untrained encoder.
``--knn`` runs the cheap kNN probe instead (embedding through Ray Data, no training). ``--config F`` (JSON/YAML of
LinearEvalConfig keys) is read first, flags override. Re-running with the same ``--output`` resumes.
``--smoke-test``: tiny and short, synthetic data and a random tiny encoder when ``--data``/``--checkpoint`` absent.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from macdiff_ray import console  # noqa: E402
from macdiff_ray.cli import (  # noqa: E402
    add_console_flags, merge_values, mlflow_line, parser, smoke_dataset, start_console,
)
from macdiff_ray.train.tracking import add_flags as add_tracking_flags  # noqa: E402
from macdiff_ray.config import ConfigError, from_dict  # noqa: E402


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", dest="data_dir")
    p.add_argument("--benchmark")
    p.add_argument("--checkpoint", help="checkpoint dir, .pt file, pretraining run dir or URI")
    p.add_argument("--random-init", dest="random_init", action="store_true", default=None)
    p.add_argument("--preset", choices=("paper", "small", "tiny"))
    p.add_argument("--joint-map", dest="joint_map", help="JSON/YAML joint map (transfer across layouts)")
    p.add_argument("--feature", choices=("pooled", "per_joint", "raw"))
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", dest="batch_size", type=int, help="GLOBAL batch size")
    p.add_argument("--lr", type=float)
    p.add_argument("--num-frames", dest="num_frames", type=int)
    p.add_argument("--labeled-fraction", dest="labeled_fraction", type=float)
    p.add_argument("--max-steps-per-epoch", dest="max_steps_per_epoch", type=int)
    p.add_argument("--num-workers", dest="num_workers", type=int,
                   help="Ray Train workers; 0 = in this process over in-memory splits (small datasets)")
    p.add_argument("--use-gpu", dest="use_gpu", choices=("auto", "yes", "no"))
    p.add_argument("--materialize", action="store_true", default=None, help="load splits into memory first")
    p.add_argument("--seed", type=int)
    p.add_argument("--label", help="method name in reports")
    p.add_argument("--output")
    p.add_argument("--config")
    p.add_argument("--smoke-test", dest="smoke_test", action="store_true")
    add_console_flags(p)
    add_tracking_flags(p)


def closing_summary(kind: str, res: dict) -> None:
    """The closing lines of an evaluation command: its top-1 and where its files are."""
    out = res["config"]["output"]
    std = f" (std {res['top1_last_std']:.3f})" if res.get("top1_last_std") is not None else ""
    console.summary(
        f"{kind} done ({res.get('label')}): top-1 last {res['top1_last']:.4f}{std}, best {res['top1_best']:.4f}, "
        f"{res['wall_time_s']:.0f} s",
        {"results": f"{out}/results.json", "TensorBoard": f"tensorboard --logdir {out}", "MLflow": mlflow_line(res.get("mlflow"))},
    )


def build_values(args: argparse.Namespace, smoke: dict, skip: tuple[str, ...] = ()) -> dict:
    values = merge_values(args, smoke, skip)
    if args.smoke_test:
        if "data_dir" not in values:
            values["data_dir"] = smoke_dataset()
            values.setdefault("benchmark", "synthetic")
        if not values.get("checkpoint") and values.get("feature") != "raw":
            values.setdefault("random_init", True)
            values.setdefault("preset", "tiny")
        values.setdefault("output", tempfile.mkdtemp(prefix="macdiff_smoke_eval_"))
    return values


def main(argv=None) -> int:
    p = parser(
        __doc__.split("\n\n")[0],
        "python experiments/linear_eval.py --data runs/quickstart/data --benchmark synthetic "
        "--checkpoint runs/quickstart/pretrain --feature per_joint --epochs 15 --output runs/linear_pretrained",
        "RUN_DIR/config.json, results.json (top-1/top-5 last and best, per-epoch history), checkpoints/, tb/ "
        "(TensorBoard), ray.log; with --mlflow also RUN_DIR/mlflow.db (or the --mlflow-uri server)",
    )
    add_common(p)
    p.add_argument("--cache-views", dest="cache_views", type=int,
                   help="frozen-feature cache: training passes encoded once and reused by every epoch (default 4; "
                        "0 encodes every batch of every epoch)")
    p.add_argument("--knn", action="store_true", help="kNN probe instead of a trained linear head")
    p.add_argument("--k", type=int, help="kNN neighbours (20)")
    args = p.parse_args(argv)
    from macdiff_ray.eval.probe import LinearEvalConfig, linear_smoke_overrides, run_linear_eval

    try:
        if args.knn:
            from macdiff_ray.eval.knn import KnnConfig, run_knn

            values = build_values(args, {"num_frames": 32} if args.smoke_test else {}, skip=("knn",))
            keep = {f for f in KnnConfig.__dataclass_fields__}
            dropped = sorted(k for k in values if k not in keep)
            if dropped:
                print(f"note: ignored for --knn: {dropped}", file=sys.stderr)
            cfg = from_dict(KnnConfig, {k: v for k, v in values.items() if k in keep})
            res = run_knn(cfg)
        else:
            cfg = from_dict(LinearEvalConfig, build_values(args, linear_smoke_overrides(), skip=("knn", "k")))
            start_console(args, cfg.output)
            res = run_linear_eval(cfg)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    if args.knn:
        keys = ("label", "top1_last", "top1_best", "top5_last", "top5_best", "best_epoch_top1", "wall_time_s")
        print(json.dumps({k: res.get(k) for k in keys}, indent=2))
        print(f"run directory: {cfg.output}")
    else:
        closing_summary("linear probe", res)
        console.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
