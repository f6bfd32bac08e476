"""The learning study: budgeted pretraining, then probes, kNN, 1-NN, fine-tuning, from scratch and semi-supervised
fine-tuning with and without diffusion augmentation, over seeds, in one resumable command.

Every row is a run directory under RUN_DIR/rows/; re-running the same command skips the rows already done.
``--pretrained RUN`` reuses a finished pretraining run instead of pretraining (the table names it).
``--smoke-test``: synthetic data, two seeds, two-epoch rows (under a minute on 2 cores once Ray is up).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from macdiff_ray import console  # noqa: E402
from macdiff_ray.cli import add_console_flags, merge_values, parser, smoke_dataset, start_console  # noqa: E402
from macdiff_ray.config import ConfigError, from_dict  # noqa: E402
from macdiff_ray.eval.study import ROWS, StudyConfig, run_study, smoke_overrides  # noqa: E402


def main(argv=None) -> int:
    p = parser(
        __doc__.split("\n\n")[0],
        "python experiments/study.py --data prepared/ucla --benchmark ucla-xview --budget-minutes 60 --seeds 0 1 2 3 4 "
        "--output runs/study_ucla",
        "RUN_DIR/study.md (the table), study.json, curves.png, pretrain/ (the pretraining run), rows/<row>/ (one "
        "run directory per row, seed_<s>/ per seed), ray.log",
    )
    p.add_argument("--data", dest="data_dir", help="prepared dataset directory")
    p.add_argument("--benchmark", help="benchmark name, e.g. ucla-xview, msr-xsub, utk-xsub")
    p.add_argument("--output", help="study directory; re-use it to resume")
    p.add_argument("--preset", choices=("paper", "small", "tiny"))
    p.add_argument("--num-frames", dest="num_frames", type=int, help="T0 (default: from the data's lengths)")
    p.add_argument("--budget-minutes", dest="budget_minutes", type=float, help="pretraining wall-clock budget")
    p.add_argument("--pretrained", help="a finished pretraining run directory to use instead of pretraining")
    p.add_argument("--seeds", type=int, nargs="+")
    p.add_argument("--rows", nargs="+", choices=ROWS, help="rows to run (default: all)")
    p.add_argument("--probe-epochs", dest="probe_epochs", type=int)
    p.add_argument("--probe-cache-views", dest="probe_cache_views", type=int,
                   help="augmented training passes the probes encode once (default 16; 0: fresh every epoch)")
    p.add_argument("--finetune-epochs", dest="finetune_epochs", type=int)
    p.add_argument("--semi-fractions", dest="semi_fractions", type=float, nargs="+")
    p.add_argument("--aug-t-start", dest="aug_t_start", type=int, nargs="+",
                   help="t_s of the diffusion augmentation (default 500); several values: one row each")
    p.add_argument("--recipe", choices=("auto", "paper", "small"), help="fine-tuning regularisation recipe")
    p.add_argument("--use-gpu", dest="use_gpu", choices=("auto", "yes", "no"))
    p.add_argument("--config", help="JSON/YAML file of StudyConfig keys")
    p.add_argument("--smoke-test", action="store_true", help="synthetic data, tiny rows")
    add_console_flags(p)
    args = p.parse_args(argv)
    try:
        values = merge_values(args, smoke_overrides())
        if args.smoke_test:
            if "data_dir" not in values:
                values["data_dir"] = smoke_dataset()
                values.setdefault("benchmark", "synthetic")
            values.setdefault("output", tempfile.mkdtemp(prefix="macdiff_smoke_study_"))
        cfg = from_dict(StudyConfig, values)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    start_console(args, cfg.output)
    res = run_study(cfg)
    print(res["table_md"])
    console.summary(f"study done in {res['wall_time_s'] / 60:.1f} min",
                    {"table": f"{cfg.output}/study.md", "results": f"{cfg.output}/study.json",
                     "curves": f"{cfg.output}/curves.png"})
    console.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
