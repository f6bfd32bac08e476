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
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from macdiff_ray.config import ConfigError  # noqa: E402
from macdiff_ray.tune.space import load_space  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", required=True, help="search-space file (YAML/JSON)")
    p.add_argument("--output", required=True, help="sweep directory; re-use it to resume")
    p.add_argument("--data", dest="data_dir", help="prepared dataset directory (sets base.data_dir)")
    p.add_argument("--benchmark", help="sets base.benchmark")
    p.add_argument("--checkpoint", help="augment sweeps: pretrained checkpoint (sets base.checkpoint)")
    p.add_argument("--resume", choices=("auto", "never", "force"), default="auto")
    p.add_argument("--validate-only", action="store_true", help="check the space file and exit")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    overrides = {k: v for k, v in (("data_dir", args.data_dir), ("benchmark", args.benchmark),
                                   ("checkpoint", args.checkpoint)) if v is not None}
    try:
        space = load_space(args.space, overrides)
        if args.validate_only:
            print(f"{args.space}: valid ({space.kind}, {len(space.params)} searched parameter(s))")
            return 0
        from macdiff_ray.tune.sweep import run_sweep

        summary = run_sweep(space, args.output, resume=args.resume, quiet=False)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    print(Path(summary["table_md"]).read_text())
    print(json.dumps({k: summary[k] for k in ("num_trials", "status_counts", "restored", "best_config",
                                              "wall_time_s")}, indent=2))
    return 1 if summary["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
