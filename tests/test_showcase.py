"""The quickstart's picture (macdiff_ray.generate.showcase): three captioned rows (real, reconstruction, sample) in one
PNG, and the reconstruction keeps every observed entry (its error is measured on the occluded frames only)."""

from __future__ import annotations

import math

from PIL import Image

from macdiff_ray.augment import save_random_checkpoint
from macdiff_ray.generate.showcase import render_showcase


def test_showcase_renders_three_rows(synthetic_prepared, tmp_path):
    ckpt = save_random_checkpoint(synthetic_prepared, "synthetic", tmp_path / "ckpt", num_frames=16)
    out = render_showcase(str(ckpt), str(synthetic_prepared), "synthetic", tmp_path / "pic.png", occluded_frames=4,
                          steps=3)
    img = Image.open(out["path"])
    assert img.format == "PNG" and img.height > 3 * 60  # three strips
    assert out["occluded_frames"] == 4 and out["sample_id"].startswith("syn")
    assert math.isfinite(out["macdiff_mm"]) and out["macdiff_mm"] > 0
    assert math.isfinite(out["linear_interp_mm"]) and out["linear_interp_mm"] > 0
