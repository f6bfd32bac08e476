"""Gather evaluation runs into paper-style markdown tables (Tables 1-4 + all runs).

    python experiments/report.py --runs RUN_DIR_OR_PARENT ... --out table.md
    python experiments/report.py --print-baseline-commands --data DIR --checkpoint CKPT --runs-root OUT

Each ``--runs`` entry is a ``results.json``, a run directory, or a folder of run directories.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from macdiff_ray.cli import parser  # noqa: E402


def smoke_runs() -> str:
    """``--smoke-test``: two tiny real linear probes on a small synthetic set (a random-init tiny encoder and raw
    coordinates, 2 short epochs each, one local Ray) in a temp folder; returns the folder. Checks the plumbing: the
    numbers mean nothing."""
    import tempfile

    from macdiff_ray.cli import smoke_dataset
    from macdiff_ray.config import from_dict
    from macdiff_ray.eval.probe import LinearEvalConfig, linear_smoke_overrides, run_linear_eval

    from macdiff_ray import console

    data, root = smoke_dataset(), Path(tempfile.mkdtemp(prefix="macdiff_smoke_report_"))
    console.setup(str(root / console.LOG_NAME))  # Ray's internals of the two probes go to ROOT/ray.log
    console.say(f"--smoke-test: two tiny probes on synthetic data in {root}")
    common = dict(linear_smoke_overrides(), data_dir=data, benchmark="synthetic")
    run_linear_eval(from_dict(LinearEvalConfig, dict(common, random_init=True, preset="tiny",
                                                     output=str(root / "random_tiny"))), quiet=True)
    run_linear_eval(from_dict(LinearEvalConfig, dict(common, feature="raw", output=str(root / "raw"))), quiet=True)
    return str(root)


def main(argv=None) -> int:
    p = parser(__doc__.split("\n\n")[0],
               'python experiments/report.py --runs runs/ucla_eval --out runs/ucla_eval/tables.md',
               'the markdown tables in --out (printed when --out is absent)')
    p.add_argument("--runs", nargs="+")
    p.add_argument("--out", help="markdown file (default: print)")
    p.add_argument("--print-baseline-commands", action="store_true",
                   help="print the NW-UCLA (a)-(d) commands instead of a report")
    p.add_argument("--data")
    p.add_argument("--checkpoint")
    p.add_argument("--runs-root", default="runs/ucla_eval")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--smoke-test", action="store_true",
                   help="report on two tiny real probes run here on synthetic data (about a minute)")
    a = p.parse_args(argv)
    if a.smoke_test and not a.runs:
        a.runs = [smoke_runs()]
    if a.print_baseline_commands:
        from macdiff_ray.eval.baselines import baseline_commands

        print("\n".join(baseline_commands(a.data or "DATA", a.checkpoint or "PRETRAIN_RUN", a.runs_root, a.preset,
                                          a.epochs)))
        return 0
    if not a.runs:
        p.error("--runs is required")
    from macdiff_ray.eval.report import build_report, load_runs

    md = build_report(load_runs(a.runs))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(md)
        print(f"wrote {a.out}")
    else:
        print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
