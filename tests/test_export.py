"""Prepared shards -> arrays .npz -> prepared again (data/export.py)."""

import numpy as np

from macdiff_ray.data.export import export_arrays
from macdiff_ray.data.pipeline import read_rows, select_split
from macdiff_ray.data.prepare import prepare_dataset


def test_export_round_trip_keeps_split_and_coordinates(tmp_path, synthetic_prepared):
    npz = tmp_path / "syn.npz"
    counts = export_arrays(str(synthetic_prepared), "synthetic", npz)
    z = np.load(npz, allow_pickle=False)
    assert len(z["y"]) == counts["train"] + counts["test"] and counts["train"] > 0 and counts["test"] > 0
    assert set(z["split"].tolist()) == {"train", "test"}
    back = tmp_path / "back"
    prepare_dataset("arrays", tmp_path, back, progress=False, center=False)
    for split in ("train", "test"):
        a = select_split(str(synthetic_prepared), "synthetic", split)
        b = select_split(str(back), "custom", split)
        assert len(a) == len(b) == counts[split]
        ra, rb = read_rows(a.shards, a.sample_ids), read_rows(b.shards, b.sample_ids)
        np.testing.assert_array_equal(np.sort(ra["label"]), np.sort(rb["label"]))
        i = int(np.argmax(ra["length"]))
        j = int(np.flatnonzero(rb["sample_id"] == ra["sample_id"][i])[0])
        n = ra["length"][i]
        np.testing.assert_allclose(rb["x"][j, :, :n], ra["x"][i, :, :n], atol=1e-6)
