"""Benchmark split rules (published NTU sizes, filter pushdown == python mirror), subsets, synthetic sanity."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pytest

from conftest import shared_dataset
from macdiff_ray.data.benchmarks import (
    BENCHMARKS, benchmarks_for_dataset, parse_ntu_name, read_split, split_filter, split_of, split_of_ntu_name,
)
from macdiff_ray.data.manifest import load_manifest
from macdiff_ray.data.shards import table_x
from macdiff_ray.data.subsets import stratified_subset


@pytest.mark.parametrize(
    "names_file,bench,train,test",
    [
        ("ntu60", "ntu60-xsub", 40091, 16487),
        ("ntu60", "ntu60-xview", 37646, 18932),
        ("ntu120", "ntu60-xsub", 40091, 16487),  # NTU-60 inside an NTU-120 conversion
        ("ntu120", "ntu120-xsub", 63026, 50919),
        ("ntu120", "ntu120-xset", 54468, 59477),
    ],
)
def test_ntu_published_split_sizes(names_file, bench, train, test):
    f = shared_dataset("ntu_rgbd_samples") / "metadata" / f"{names_file}_skes_available_name.txt"
    names = f.read_text().split()
    c = Counter(split_of_ntu_name(n, bench) for n in names)
    assert (c["train"], c["test"]) == (train, test)


def test_ntu_filter_expression_agrees_with_name_rule():
    names = (shared_dataset("ntu_rgbd_samples") / "metadata" / "ntu120_skes_available_name.txt").read_text().split()
    rows = [parse_ntu_name(n) for n in names[::7]]
    table = pa.table({k: pa.array([r[k] for r in rows], pa.int32()) for k in rows[0]})
    for b in ("ntu60-xsub", "ntu60-xview", "ntu120-xsub", "ntu120-xset"):
        for split in ("train", "test"):
            got = table.filter(split_filter(b, split)).num_rows
            assert got == sum(split_of(b, r) == split for r in rows), (b, split)


def test_parse_ntu_name():
    assert parse_ntu_name("S018C002P045R001A120") == {"setup": 18, "view": 2, "subject": 45, "replication": 1,
                                                       "label": 119}
    assert split_of_ntu_name("S018C002P045R001A120", "ntu60-xsub") is None
    with pytest.raises(ValueError, match="not an NTU sample name"):
        parse_ntu_name("a01_s01_e00_v01")


def test_benchmarks_for_dataset_and_unknown_names():
    assert benchmarks_for_dataset("ntu120") == ["ntu60-xsub", "ntu60-xview", "ntu120-xsub", "ntu120-xset"]
    assert benchmarks_for_dataset("ntu60") == ["ntu60-xsub", "ntu60-xview"]
    assert benchmarks_for_dataset("ucla") == ["ucla-xview"] and benchmarks_for_dataset("whatever") == ["custom"]
    assert {"pku1-xsub", "pku2-xsub", "msr-xsub", "synthetic", "custom"} <= set(BENCHMARKS)
    with pytest.raises(ValueError, match="unknown benchmark"):
        split_filter("ntu60-xsetup", "train")
    with pytest.raises(ValueError, match="split must be one of"):
        split_filter("ucla-xview", "val")


def test_read_split_pushdown_matches_manifest(ucla_prepared):
    m = load_manifest(ucla_prepared)
    tr = read_split(ucla_prepared, "ucla-xview", "train", columns=["sample_id", "label"])
    te = read_split(ucla_prepared, "ucla-xview", "test")
    assert tr.column_names == ["sample_id", "label"]
    assert (tr.num_rows, te.num_rows) == (m["split_counts"]["ucla-xview"]["train"], 464)
    assert set(te.column("view").to_pylist()) == {3}
    assert all(s.endswith(("_v01", "_v02")) for s in tr.column("sample_id").to_pylist())
    with pytest.raises(ValueError, match="does not serve benchmark 'ntu60-xsub'"):
        read_split(ucla_prepared, "ntu60-xsub", "train")


def test_custom_and_synthetic_splits_agree(synthetic_prepared):
    for b in ("synthetic", "custom"):
        ids = {s: set(read_split(synthetic_prepared, b, s, columns=["sample_id"]).column(0).to_pylist())
               for s in ("train", "test")}
        assert len(ids["train"]) == len(ids["test"]) == 120 and not ids["train"] & ids["test"]
    t = read_split(synthetic_prepared, "synthetic", "train", columns=["subject"])
    assert all(s % 2 == 1 for s in t.column(0).to_pylist())


# ---------------------------------------------------------------- stratified subsets
def test_stratified_subset_properties():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 60, size=40000)
    labels[:3] = 60  # a rare class with 3 examples
    for frac in (0.01, 0.1):
        idx = stratified_subset(labels, frac, seed=5)
        assert idx.dtype == np.int64 and np.all(np.diff(idx) > 0)  # sorted, unique
        per = np.bincount(labels[idx], minlength=61)
        full = np.bincount(labels, minlength=61)
        assert (per >= 1).all()
        assert np.all(np.abs(per - np.maximum(1, np.round(frac * full))) < 1)
        assert abs(idx.size - frac * labels.size) <= 61
    a, b = stratified_subset(labels, 0.1, seed=1), stratified_subset(labels.copy(), 0.1, seed=1)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, stratified_subset(labels, 0.1, seed=2))
    assert stratified_subset(labels, 1.0, 0).size == labels.size


@pytest.mark.parametrize("labels,frac,seed", [([[0, 1]], 0.1, 0), ([0.5, 1.0], 0.1, 0), ([0, 1], 0.0, 0),
                                              ([0, 1], 1.5, 0), ([0, 1], 0.5, -1)])
def test_stratified_subset_rejects(labels, frac, seed):
    with pytest.raises(ValueError):
        stratified_subset(np.array(labels), frac, seed)


# ---------------------------------------------------------------- synthetic sanity
def _features(t):
    x, lengths = table_x(t)[:, 0], t.column("length").to_numpy()  # (N, T, V, C), (N,)
    full, trivial = [], []
    for xi, n in zip(x, lengths):
        xi = xi[np.linspace(0, n - 1, 16).round().astype(int)]  # (16, V, C)
        xi = xi - xi[:1, 1:2]  # centre on the first frame's spine
        full.append(xi.ravel())
        trivial.append(np.r_[xi.mean((0, 1)), n])  # mean position and length only
    return np.array(full), np.array(trivial), t.column("label").to_numpy()


def test_synthetic_is_learnable_but_not_trivial(synthetic_prepared):
    a, ga, ya = _features(read_split(synthetic_prepared, "synthetic", "train"))
    b, gb, yb = _features(read_split(synthetic_prepared, "synthetic", "test"))

    def nn_acc(tr, te):
        return float((ya[((te[:, None] - tr[None]) ** 2).sum(-1).argmin(1)] == yb).mean())

    chance = 1 / 6
    # the motion carries the label (the gestures' order, which 1-NN on raw poses reads only in part) ...
    assert nn_acc(a, b) > 2 * chance
    assert nn_acc(a, b) < 0.99  # ... but not perfectly for a nearest-neighbour on raw poses
    assert nn_acc(ga, gb) < 2.5 * chance  # position and length alone say little
