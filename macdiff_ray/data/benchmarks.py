"""Evaluation benchmarks: which rows of a prepared dataset form each split.

Each benchmark is defined once, from constants (subject / camera / setup ids), and exposed two ways that must
agree: a ``pyarrow.compute`` filter expression for Parquet filter pushdown (:func:`split_filter`) and a
pure-python predicate on one sample's fields (:func:`split_of`), used by ``prepare_dataset`` to count splits and
compute train-split statistics, and by :func:`split_of_ntu_name` on bare NTU names.

NTU: one NTU-120 conversion serves all four NTU benchmarks; NTU-60 is the subset of setups 1-17 and actions
1-60 (Liu et al., TPAMI 2019). Splits (NTU RGB+D papers; counts exclude the missing-skeleton lists):

==============  =======================================  =================
benchmark       train                                    train / test
==============  =======================================  =================
ntu60-xsub      performers in NTU60_TRAIN_SUBJECTS        40,091 / 16,487
ntu60-xview     cameras 2 and 3 (camera 1 is test)        37,646 / 18,932
ntu120-xsub     performers in NTU120_TRAIN_SUBJECTS       63,026 / 50,919
ntu120-xset     even setup ids                            54,468 / 59,477
ucla-xview      views 1 and 2 (view 3 is test)            1,020 / 464
msr-xsub        odd subjects (Li et al. 2010)             (see msr PROVENANCE)
utk-xsub        odd subjects (UTKinect cross-subject)     100 / 99
pku1/2-xsub     the stored ``split`` column, written by formats/pku.py
custom          the stored ``split`` column
synthetic       odd subjects train, even subjects test
==============  =======================================  =================
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "Benchmark",
    "BENCHMARKS",
    "SPLITS",
    "NTU60_TRAIN_SUBJECTS",
    "NTU120_TRAIN_SUBJECTS",
    "NTU60_TRAIN_CAMERAS",
    "NTU60_MAX_SETUP",
    "NTU60_NUM_CLASSES",
    "split_filter",
    "split_of",
    "split_of_ntu_name",
    "parse_ntu_name",
    "benchmarks_for_dataset",
    "read_split",
]

SPLITS: tuple[str, ...] = ("train", "test")

NTU60_TRAIN_SUBJECTS: frozenset[int] = frozenset(
    (1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38)
)
NTU120_TRAIN_SUBJECTS: frozenset[int] = NTU60_TRAIN_SUBJECTS | frozenset(
    (45, 46, 47, 49, 50, 52, 53, 54, 55, 56, 57, 58, 59, 70, 74, 78, 80, 81, 82, 83, 84, 85, 86, 89, 91, 92, 93,
     94, 95, 97, 98, 100, 103)
)
NTU60_TRAIN_CAMERAS: frozenset[int] = frozenset((2, 3))
NTU60_MAX_SETUP = 17  # NTU-60 = setups S001-S017 ...
NTU60_NUM_CLASSES = 60  # ... and actions A001-A060 (0-based labels 0..59)
UCLA_TRAIN_VIEWS: frozenset[int] = frozenset((1, 2))

# A row seen by the python predicates: the manifest columns except x.
Row = Mapping[str, object]


@dataclass(frozen=True)
class Benchmark:
    """A named split rule.

    ``universe`` selects the rows the benchmark uses at all (e.g. NTU-60 inside an NTU-120 conversion),
    ``train`` the training rows within it; test = universe and not train. ``train`` is ``None`` for
    benchmarks that read the stored ``split`` column instead.
    """

    name: str
    datasets: tuple[str, ...]
    universe_expr: Callable[[], pc.Expression | None]
    universe_row: Callable[[Row], bool]
    train_expr: Callable[[], pc.Expression]
    train_row: Callable[[Row], bool]
    test_expr: Callable[[], pc.Expression] | None = None  # default: not train
    test_row: Callable[[Row], bool] | None = None

    def filter(self, split: str) -> pc.Expression:
        _check_split(split)
        if split == "train":
            e = self.train_expr()
        elif self.test_expr is not None:
            e = self.test_expr()
        else:
            e = ~self.train_expr()
        u = self.universe_expr()
        return e if u is None else (u & e)

    def split_of(self, row: Row) -> str | None:
        """``"train"``, ``"test"`` or ``None`` (row not in this benchmark)."""
        if not self.universe_row(row):
            return None
        if self.train_row(row):
            return "train"
        if self.test_row is None or self.test_row(row):
            return "test"
        return None


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")


def _isin(col: str, values: frozenset[int]) -> pc.Expression:
    return pc.field(col).isin(pa.array(sorted(values), pa.int32()))


def _parity(col: str) -> pc.Expression:
    """``col % 2`` as an expression (Expression has no ``%``); ids are positive, so ``& 1`` is the parity."""
    return pc.bit_wise_and(pc.field(col), pa.scalar(1, pa.int32()))


def _everything() -> None:
    return None


def _ntu60_universe_expr() -> pc.Expression:
    return (pc.field("setup") <= NTU60_MAX_SETUP) & (pc.field("label") < NTU60_NUM_CLASSES)


def _ntu60_universe_row(r: Row) -> bool:
    return int(r["setup"]) <= NTU60_MAX_SETUP and int(r["label"]) < NTU60_NUM_CLASSES


def _pku(phase: int) -> Benchmark:
    """PKU-MMD cross-subject: the reader stores each segment's split in the ``split`` column.

    Phase-1 video names carry no performer id, so the split cannot be derived from ``subject``; the PKU reader
    (``formats/pku.py``: ``xsub_split`` or an official ``split_file``) decides it once, at conversion time.
    """
    return Benchmark(
        name=f"pku{phase}-xsub",
        datasets=(f"pku{phase}",),
        universe_expr=_everything,
        universe_row=lambda r: True,
        train_expr=lambda: pc.field("split") == "train",
        train_row=lambda r: r["split"] == "train",
        test_expr=lambda: pc.field("split") == "test",
        test_row=lambda r: r["split"] == "test",
    )


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark(
            "ntu60-xsub", ("ntu60", "ntu120"), _ntu60_universe_expr, _ntu60_universe_row,
            lambda: _isin("subject", NTU60_TRAIN_SUBJECTS), lambda r: int(r["subject"]) in NTU60_TRAIN_SUBJECTS,
        ),
        Benchmark(
            "ntu60-xview", ("ntu60", "ntu120"), _ntu60_universe_expr, _ntu60_universe_row,
            lambda: _isin("view", NTU60_TRAIN_CAMERAS), lambda r: int(r["view"]) in NTU60_TRAIN_CAMERAS,
        ),
        Benchmark(
            "ntu120-xsub", ("ntu120",), _everything, lambda r: True,
            lambda: _isin("subject", NTU120_TRAIN_SUBJECTS), lambda r: int(r["subject"]) in NTU120_TRAIN_SUBJECTS,
        ),
        Benchmark(
            "ntu120-xset", ("ntu120",), _everything, lambda r: True,
            lambda: _parity("setup") == 0, lambda r: int(r["setup"]) % 2 == 0,
        ),
        _pku(1),
        _pku(2),
        Benchmark(
            "ucla-xview", ("ucla",), _everything, lambda r: True,
            lambda: _isin("view", UCLA_TRAIN_VIEWS), lambda r: int(r["view"]) in UCLA_TRAIN_VIEWS,
        ),
        Benchmark(
            "msr-xsub", ("msr",), _everything, lambda r: True,
            lambda: _parity("subject") == 1, lambda r: int(r["subject"]) % 2 == 1,
        ),
        Benchmark(
            "utk-xsub", ("utk",), _everything, lambda r: True,
            lambda: _parity("subject") == 1, lambda r: int(r["subject"]) % 2 == 1,
        ),
        Benchmark(
            "custom", ("custom", "synthetic"), _everything, lambda r: True,
            lambda: pc.field("split") == "train", lambda r: r["split"] == "train",
            lambda: pc.field("split") == "test", lambda r: r["split"] == "test",
        ),
        Benchmark(
            "synthetic", ("synthetic",), _everything, lambda r: True,
            lambda: _parity("subject") == 1, lambda r: int(r["subject"]) % 2 == 1,
        ),
    )
}


def _get(name: str) -> Benchmark:
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; known: {sorted(BENCHMARKS)}")
    return BENCHMARKS[name]


def split_filter(name: str, split: str) -> pc.Expression:
    """Filter expression selecting ``split`` (``train``/``test``) rows of benchmark ``name``."""
    return _get(name).filter(split)


def split_of(name: str, row: Row) -> str | None:
    """Python mirror of :func:`split_filter` for one row (a mapping with the manifest's scalar columns)."""
    return _get(name).split_of(row)


def benchmarks_for_dataset(dataset: str) -> list[str]:
    """Benchmarks a prepared ``dataset`` serves, in :data:`BENCHMARKS` order (``custom`` for unknown names)."""
    out = [n for n, b in BENCHMARKS.items() if dataset in b.datasets]
    return out or ["custom"]


def parse_ntu_name(name: str) -> dict[str, int]:
    """``SsssCcccPpppRrrrAaaa`` -> ``{setup, view (camera), subject, replication, label (0-based)}``."""
    n = name.strip()
    if len(n) != 20 or [n[i] for i in (0, 4, 8, 12, 16)] != list("SCPRA") or not all(
        n[i + 1 : i + 4].isdigit() for i in (0, 4, 8, 12, 16)
    ):
        raise ValueError(f"not an NTU sample name (SsssCcccPpppRrrrAaaa): {name!r}")
    return {
        "setup": int(n[1:4]),
        "view": int(n[5:8]),
        "subject": int(n[9:12]),
        "replication": int(n[13:16]),
        "label": int(n[17:20]) - 1,
    }


def split_of_ntu_name(name: str, benchmark: str) -> str | None:
    """``"train"``/``"test"`` of an NTU sample name under an NTU benchmark, ``None`` if outside it
    (e.g. an NTU-120-only sample under ``ntu60-xsub``). Uses the same constants as :func:`split_filter`."""
    if not benchmark.startswith("ntu"):
        raise ValueError(f"split_of_ntu_name needs an NTU benchmark, got {benchmark!r}")
    return split_of(benchmark, parse_ntu_name(name))


def read_split(
    data_dir: str | Path, benchmark: str, split: str, columns: Sequence[str] | None = None
) -> pa.Table:
    """Rows of one split of a prepared dataset, read with Parquet filter pushdown (small data and tests).

    Rows come in shard order (sorted by ``sample_id``). Raises ``ValueError`` if the dataset does not serve
    ``benchmark``.
    """
    import pyarrow.parquet as pq

    from macdiff_ray.data.manifest import list_shards, load_manifest

    manifest = load_manifest(data_dir)
    served = benchmarks_for_dataset(manifest["dataset"])
    if benchmark not in served:
        raise ValueError(
            f"{data_dir}: dataset {manifest['dataset']!r} does not serve benchmark {benchmark!r}; it serves {served}"
        )
    expr = split_filter(benchmark, split)
    tables = [pq.read_table(p, columns=list(columns) if columns else None, filters=expr) for p in list_shards(data_dir)]
    return pa.concat_tables(tables)
