"""Convert a raw skeleton source into a prepared dataset (Parquet shards + manifest.json).

    python experiments/prepare_data.py --format ucla --input ../shared/data/nw_ucla/all_sqe --output data/ucla
    python experiments/prepare_data.py --format ntu --input RAW --output data/ntu120 --missing-list FILE
    python experiments/prepare_data.py --format synthetic --output data/syn --num-samples 600 --num-classes 10
    python experiments/prepare_data.py --smoke-test
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from macdiff_ray.cli import epilog  # noqa: E402
from macdiff_ray.data.formats import FORMATS  # noqa: E402
from macdiff_ray.data.manifest import load_manifest  # noqa: E402
from macdiff_ray.data.prepare import prepare_dataset  # noqa: E402
from macdiff_ray.data.report import format_report  # noqa: E402
from macdiff_ray.data.samples import DataFormatError  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=epilog("python experiments/prepare_data.py --format ucla --input ../shared/data/nw_ucla/all_sqe "
                      "--output data/ucla",
                      "OUTPUT/manifest.json (schema, layout, classes, split counts, statistics, skipped inputs) and "
                      "OUTPUT/shards/part-*.parquet"),
    )
    p.add_argument("--format", choices=sorted(FORMATS))
    p.add_argument("--input", type=Path, help="source file or folder (not for synthetic)")
    p.add_argument("--output", help="local folder or URI (s3://bucket/prefix: uploaded with manifest.json last)")
    p.add_argument("--on-error", choices=["raise", "skip"], default="raise")
    p.add_argument("--units", choices=["m", "cm", "mm"], default="m")
    p.add_argument("--missing-list", help="NTU: official missing-skeleton list")
    p.add_argument("--num-samples", type=int, help="synthetic: number of samples")
    p.add_argument("--num-classes", type=int, help="synthetic: number of classes")
    p.add_argument("--seed", type=int, help="synthetic: seed")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="other format option, e.g. subset=all (msr), train_split=xsub_train (pyskl), layout=ntu25; "
                        "align=true (any format: turn each body about the y axis so that its right-to-left hip and shoulder line "
                        "lies along +x; align=x or z for another up axis; align=full also stands it upright, hips to "
                        "shoulders along +y)")
    p.add_argument("--shard-rows", type=int, default=1024)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--smoke-test", action="store_true", help="convert 60 synthetic samples into a temp folder")
    a = p.parse_args(argv)
    if not a.smoke_test and (a.format is None or a.output is None):
        p.error("--format and --output are required (or --smoke-test)")
    return a


def summary(manifest: dict) -> str:
    lines = [f"{manifest['dataset']} ({manifest['source_format']}): {manifest['num_samples']} samples, "
             f"{manifest['num_classes']} classes, T_max {manifest['max_frames']}, M {manifest['max_persons']}, "
             f"{len(manifest['shards'])} shards, {len(manifest['skipped'])} skipped"]
    for b, c in manifest["split_counts"].items():
        lines.append(f"  {b:12s} train {c['train']:7d}  test {c['test']:7d}")
    for s in manifest["skipped"][:10]:
        lines.append(f"  skipped {s['input']}: {s['reason']}")
    if len(manifest["skipped"]) > 10:
        lines.append(f"  ... {len(manifest['skipped']) - 10} more in manifest.json")
    return "\n".join(lines)


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.smoke_test:
        with tempfile.TemporaryDirectory() as d:
            m = prepare_dataset("synthetic", None, Path(d) / "syn", progress=False,
                                synthetic_options={"num_samples": 60, "num_classes": 6, "seed": 0})
            load_manifest(Path(d) / "syn", verify_checksums=True)
            print(summary(m))
            print(format_report(m))
        return 0
    fmt_opts = {}
    for kv in a.option:
        if "=" not in kv:
            print(f"error: --option expects KEY=VALUE, got {kv!r}", file=sys.stderr)
            return 2
        k, v = kv.split("=", 1)
        fmt_opts[k.strip()] = v.strip()
    if a.missing_list is not None:
        fmt_opts["missing_list"] = a.missing_list
    syn = None
    if a.format == "synthetic":
        syn = {k: v for k, v in (("num_samples", a.num_samples), ("num_classes", a.num_classes), ("seed", a.seed))
               if v is not None}
    elif any(v is not None for v in (a.num_samples, a.num_classes, a.seed)):
        print("error: --num-samples/--num-classes/--seed apply to --format synthetic only", file=sys.stderr)
        return 2
    try:
        m = prepare_dataset(a.format, a.input, a.output, on_error=a.on_error, progress=not a.no_progress,
                            units=a.units, shard_rows=a.shard_rows, synthetic_options=syn, overwrite=a.overwrite,
                            **fmt_opts)
    except (DataFormatError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(summary(m))
    print(format_report(m))
    print(f"wrote {a.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
