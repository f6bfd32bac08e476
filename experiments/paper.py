"""Run one of the paper's Tables 1-10 on a prepared dataset and print it beside the paper's published values.

    python experiments/paper.py --table N --data DIR --benchmark NAME --output OUT [--budget-minutes M] \
        [--preset tiny] [--seeds 0 1 2] [--target-data DIR --target-benchmark NAME] [--ray-train] [--smoke-test]

What each table runs (macdiff_ray/paper/tables.py): 1 linear probes of MacDiff, MAMP and the MAE-style baseline;
2 their fine-tunes; 3 their probes on a target dataset; 4 semi-supervised fine-tunes at 1/2/10% labels, MacDiff
with and without diffusion augmentation; 5 reconstruction by MAE, DDIM, MacDiff and MacDiff with a fine-tuned
decoder, beside linear interpolation and the mean pose; 6 generation by MDM-orig, MDM, DDIM, MacDiff and
+ fine-tune, beside real data; 7 masking strategies and ratios; 8 noise schedules; 9 the augmentation's t_s and
lambda; 10 decoder depths. Every pretraining variant gets the same wall-clock budget (--budget-minutes, each).
Tables share their runs through OUT, and re-running a command resumes: done runs are read back, not retrained.
``--table all`` runs the ten in turn. ``--smoke-test``: a small synthetic dataset and seconds-long runs (the
numbers mean nothing).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from macdiff_ray import console  # noqa: E402
from macdiff_ray.cli import add_console_flags, merge_values, parser, smoke_dataset, start_console  # noqa: E402
from macdiff_ray.config import ConfigError, from_dict  # noqa: E402
from macdiff_ray.paper import TABLES, PaperConfig, run_table, smoke_overrides  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = parser(__doc__.split("\n\n")[0],
               "python experiments/paper.py --table 7 --data prepared/ucla --benchmark ucla-xview "
               "--budget-minutes 20 --output runs/paper_ucla",
               "OUT/table_N.md (the table: paper and ours), OUT/table_N.json, and the runs it used: "
               "OUT/pretrain/<variant>/, OUT/rows/<row>/, OUT/decoder_finetune/, OUT/generate/<row>/, OUT/ray.log")
    p.add_argument("--table", required=True, help=f"1-10 or 'all'")
    p.add_argument("--data", dest="data_dir", help="prepared dataset directory")
    p.add_argument("--benchmark", help="e.g. ucla-xview, ntu60-xsub")
    p.add_argument("--output", help="output folder (shared by the tables; re-use it to resume)")
    p.add_argument("--budget-minutes", dest="budget_minutes", type=float, help="per pretraining variant")
    p.add_argument("--preset", choices=("paper", "small", "tiny"))
    p.add_argument("--num-frames", dest="num_frames", type=int, help="default: suggested by the data's lengths")
    p.add_argument("--seeds", type=int, nargs="+")
    p.add_argument("--probe-epochs", dest="probe_epochs", type=int)
    p.add_argument("--finetune-epochs", dest="finetune_epochs", type=int)
    p.add_argument("--decoder-epochs", dest="decoder_epochs", type=int)
    p.add_argument("--target-data", dest="target_data", help="Table 3: the transfer target's prepared dataset")
    p.add_argument("--target-benchmark", dest="target_benchmark")
    p.add_argument("--ray-train", dest="ray_train", action="store_true", default=None,
                   help="pretrain on Ray Train (default: in this process, for small data)")
    p.add_argument("--use-gpu", dest="use_gpu", choices=("auto", "yes", "no"))
    p.add_argument("--config", help="JSON/YAML file of PaperConfig keys")
    p.add_argument("--smoke-test", action="store_true", help="synthetic data, seconds-long runs")
    add_console_flags(p)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    tables = list(TABLES) if args.table == "all" else [int(args.table)] if args.table.isdigit() else None
    if tables is None:
        print(f"config error: --table {args.table!r}: give 1-10 or 'all'", file=sys.stderr)
        return 2
    values = merge_values(args, smoke_overrides(), skip=("table",))
    if args.smoke_test:
        values.setdefault("data_dir", smoke_dataset())
        values.setdefault("benchmark", "synthetic")
        values.setdefault("output", tempfile.mkdtemp(prefix="macdiff_paper_smoke_"))
    try:
        cfgs = [from_dict(PaperConfig, dict(values, table=n)) for n in tables]
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    start_console(args, cfgs[0].output)
    from macdiff_ray.train.runtime import init_ray

    init_ray(quiet=True)  # probes and fine-tunes run on Ray Train's local mode
    for cfg in cfgs:
        res = run_table(cfg)
        print(res["markdown"])
    console.summary(f"paper tables {', '.join(map(str, tables))} done",
                    {f"table {c.table}": f"{c.output}/table_{c.table}.md" for c in cfgs})
    console.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
