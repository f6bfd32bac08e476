"""One entry point for the benchmarks (figures, not tests): each subcommand runs a script of ``benchmarks/``.

    python experiments/benchmark.py data     [--data DIR] [--batch-size 128]          # Ray Data samples/s
    python experiments/benchmark.py model    --preset paper --batch-size 8 --threads 2  # pretraining step
    python experiments/benchmark.py pretrain [--data DIR]                             # Ray Train vs plain loop
    python experiments/benchmark.py augment  [--data DIR] [--actors 1 2]              # augmentation actors

Flags after the subcommand go to the script; ``python experiments/benchmark.py model --help`` lists them.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

SCRIPTS = {
    "data": "data_pipeline.py",
    "model": "model_step.py",
    "pretrain": "pretrain_overhead.py",
    "augment": "augment_throughput.py",
}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__)
        print("example:\n  python experiments/benchmark.py model --preset tiny --batch-size 64 --threads 2\n\n"
              "outputs:\n  the measured figures on stdout (benchmarks write no files unless a script's --out says so)")
        return 0
    if not argv or argv[0] not in SCRIPTS:
        print(__doc__)
        print(f"error: the first argument must be one of {sorted(SCRIPTS)}", file=sys.stderr)
        return 2
    script = Path(__file__).resolve().parents[1] / "benchmarks" / SCRIPTS[argv[0]]
    sys.argv = [str(script)] + argv[1:]
    runpy.run_path(str(script), run_name="__main__")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
