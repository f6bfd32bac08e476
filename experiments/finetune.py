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

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from linear_eval import add_common, build_values  # noqa: E402

from macdiff_ray.config import ConfigError, from_dict  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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
    p.add_argument("--aug-condition", dest="aug_condition", choices=("masked", "full"),
                   help="decoder condition of the augmentation: pretraining masks (default) or all tokens (paper)")
    args = p.parse_args(argv)
    from macdiff_ray.eval.finetune import FinetuneConfig, finetune_smoke_overrides, run_finetune

    try:
        cfg = from_dict(FinetuneConfig, build_values(args, finetune_smoke_overrides()))
        res = run_finetune(cfg)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    keys = ("label", "top1_last", "top1_best", "top5_last", "top5_best", "top1_last_std", "top1_best_std",
            "aug_wait_total_s", "aug_stalled_fraction", "wall_time_s")
    print(json.dumps({k: res.get(k) for k in keys if k in res}, indent=2))
    print(f"run directory: {cfg.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
