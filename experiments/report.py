"""Gather evaluation runs into paper-style markdown tables (Tables 1-4 + all runs).

    python experiments/report.py --runs RUN_DIR_OR_PARENT ... --out table.md
    python experiments/report.py --print-baseline-commands --data DIR --checkpoint CKPT --runs-root OUT

Each ``--runs`` entry is a ``results.json``, a run directory, or a folder of run directories.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", nargs="+")
    p.add_argument("--out", help="markdown file (default: print)")
    p.add_argument("--print-baseline-commands", action="store_true",
                   help="print the NW-UCLA (a)-(d) commands instead of a report")
    p.add_argument("--data")
    p.add_argument("--checkpoint")
    p.add_argument("--runs-root", default="runs/ucla_eval")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--epochs", type=int, default=100)
    a = p.parse_args(argv)
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
