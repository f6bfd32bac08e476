"""Fine-tune (or semi-supervised fine-tune, or train from scratch) an encoder with an MLP head on Ray Train.

    python experiments/finetune.py --data DIR --benchmark ucla-xview --checkpoint RUN_OR_CKPT --output RUN_DIR
        [--labeled-fraction p] [--seeds 0 1 2 3 4] [--random-init --preset P] [--feature pooled|per_joint]
        [--epochs E] [--batch-size B] [--lr LR] [--layer-decay D] [--drop-path R] [--label-smoothing S]
        [--augment --t-start 500 --aug-ratio L --augment-actors K --aug-condition masked|full] [--config F]
        [--smoke-test]

``--random-init --preset P`` trains that encoder supervised from scratch (baseline). ``--seeds`` repeats the run
(``RUN_DIR/seed_<s>/``) and reports mean ± std in ``RUN_DIR/results.json``. ``--augment`` mixes diffusion-generated
samples (``macdiff_ray.augment.pool.build_augmenter``) into every epoch and reports the time spent waiting on them.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from linear_eval import add_common, build_values, closing_summary  # noqa: E402

from macdiff_ray import console  # noqa: E402
from macdiff_ray.cli import parser, start_console  # noqa: E402

from macdiff_ray.config import ConfigError, from_dict  # noqa: E402


def main(argv=None) -> int:
    p = parser(
        __doc__.split("\n\n")[0],
        "python experiments/finetune.py --data runs/quickstart/data --benchmark synthetic "
        "--checkpoint runs/quickstart/pretrain --labeled-fraction 0.1 --epochs 20 --seeds 0 1 2 "
        "--output runs/finetune_10pct",
        "RUN_DIR/results.json (mean and std over seeds), RUN_DIR/seed_N/ (each seed's run: config.json, "
        "results.json, checkpoints/, tb/), ray.log; with --mlflow one MLflow run per seed",
    )
    add_common(p)
    p.add_argument("--seeds", type=int, nargs="+")
    p.add_argument("--layer-decay", dest="layer_decay", type=float)
    p.add_argument("--drop-path", dest="drop_path", type=float)
    p.add_argument("--label-smoothing", dest="label_smoothing", type=float)
    p.add_argument("--warmup-epochs", dest="warmup_epochs", type=float)
    p.add_argument("--augment", action="store_true", default=None)
    p.add_argument("--t-start", dest="t_start", type=int)
    p.add_argument("--aug-ratio", dest="aug_ratio", type=float)
    p.add_argument("--augment-actors", dest="augment_actors", type=int)
    p.add_argument("--augment-gpu-share", dest="augment_gpu_share", type=float,
                   help="GPU share per augmentation actor (default: 0.25 if the cluster can have GPUs, else 0)")
    p.add_argument("--aug-condition", dest="aug_condition", choices=("masked", "full"),
                   help="decoder condition of the augmentation: pretraining masks (default) or all tokens (paper)")
    p.add_argument("--recipe", choices=("auto", "paper", "small"), default="auto",
                   help="regularisation defaults (drop path, head dropout, layer decay, head, feature): 'paper' = "
                        "METHOD.md's NTU values; 'small' = sized for a few thousand sequences; 'auto' (default) = "
                        "'small' below 10,000 training sequences. Flags and --config override them.")
    p.add_argument("--head", choices=("mlp", "bn_mlp"),
                   help="mlp: Linear-GELU-Linear; bn_mlp: the released code's Linear(2048)-BN-ReLU-Linear")
    p.add_argument("--head-dropout", dest="head_dropout", type=float)
    args = p.parse_args(argv)
    from macdiff_ray.eval.finetune import FinetuneConfig, finetune_smoke_overrides, recipe_values, run_finetune

    try:
        values = build_values(args, finetune_smoke_overrides(), skip=("recipe",))
        num_train = 0
        if args.recipe == "auto" and values.get("data_dir") and values.get("benchmark"):
            from macdiff_ray.eval.features import describe_eval_data

            num_train = describe_eval_data(values["data_dir"], values["benchmark"])["num_train"]
        cfg = from_dict(FinetuneConfig, {**recipe_values(args.recipe, num_train), **values})
        start_console(args, cfg.output)
        res = run_finetune(cfg)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    closing_summary("fine-tuning", res)
    console.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
