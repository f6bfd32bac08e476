"""One entry point for the benchmarks (figures, not tests): each subcommand runs a script of ``benchmarks/``.

    python experiments/benchmark.py data     [--data DIR] [--batch-size 128]          # Ray Data samples/s
    python experiments/benchmark.py model    --preset paper --batch-size 8 --threads 2  # pretraining step
    python experiments/benchmark.py pretrain [--data DIR]                             # Ray Train vs plain loop
    python experiments/benchmark.py augment  [--data DIR] [--actors 1 2]              # augmentation actors
    python experiments/benchmark.py gpu      [--device cuda] [--data DIR --benchmark B] [--probe] --out F.json
                                                                   # needs no Ray: matmul, step sweep, training run
    python experiments/benchmark.py scale    [--sequences 114480] [--step tiny|none] [--keep] --out F.json
                                                                   # NTU-120-sized data streamed, memory per process
    python experiments/benchmark.py per-core [--data DIR --benchmark B] [--device cuda] --out F.json
                                                                   # data path per CPU core: cpu vs device transforms
    python experiments/benchmark.py released --released-repo DIR [--batch-size 8 --threads 2 --rounds 3]
                                                                   # ours vs the released code's step, interleaved
    python experiments/benchmark.py precision [--data DIR --benchmark B --preset paper --num-frames 32] --out F.json
                                                                   # bf16 vs fp32: same batches, both loss curves

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
    "gpu": "gpu.py",
    "scale": "scale.py",
    "per-core": "data_per_core.py",
    "released": "released_step.py",
    "precision": "precision.py",
}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__)
        print("example:\n  python experiments/benchmark.py model --preset tiny --batch-size 64 --threads 2\n\n"
              "outputs:\n  the measured figures on stdout (benchmarks write no files unless a script's --out says so: gpu, "
              "scale and per-core write every figure as JSON there)")
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
