"""Skeleton pictures: pixel sizes, GIF frame counts, non-blank output, 20/25-joint layouts, two persons."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from macdiff_ray.data.layouts import get_layout
from macdiff_ray.viz.render import BACKGROUND, CAPTION_H, PART_COLORS, render_gif, render_grid, render_strip


def _walking(layout_name: str, T: int = 30, M: int = 1, seed: int = 0) -> np.ndarray:
    """A moving skeleton (M, T, V, 3): joints spread along y by depth in the tree, swaying over time."""
    layout = get_layout(layout_name)
    V = layout.num_joints
    rng = np.random.default_rng(seed)
    base = rng.normal(scale=0.3, size=(V, 3))  # (V, 3)
    t = np.arange(T)[:, None, None]
    motion = 0.2 * np.sin(2 * np.pi * t / T + np.arange(V)[None, :, None])  # (T, V, 1)
    seq = base[None] + motion  # (T, V, 3)
    return np.stack([seq + np.array([m * 1.0, 0, 0]) for m in range(M)])  # (M, T, V, 3)


def _non_background(img: Image.Image) -> int:
    arr = np.asarray(img.convert("RGB"))
    return int(np.any(arr != np.array(BACKGROUND, dtype=np.uint8), axis=-1).sum())


@pytest.mark.parametrize("layout_name", ["ntu25", "kinect_v1_20", "msr20"])
def test_strip_size_and_content(tmp_path, layout_name):
    layout = get_layout(layout_name)
    seq = _walking(layout_name)[0]  # (T, V, 3)
    p = render_strip(seq, layout.bones, tmp_path / "a" / "strip.png", num_frames=6, size=(100, 80))
    img = Image.open(p)
    assert img.format == "PNG" and img.size == (600, 80)
    assert _non_background(img) > 500
    # Layout as `bones`: part colours are used.
    p2 = render_strip(seq, layout, tmp_path / "strip2.png", num_frames=4, size=90, title="real", view="side")
    img2 = Image.open(p2)
    assert img2.size == (360, 90 + CAPTION_H)
    colours = {tuple(c) for c in np.asarray(img2.convert("RGB")).reshape(-1, 3)}
    assert PART_COLORS["left_arm"] in colours and PART_COLORS["right_leg"] in colours


def test_strip_two_persons_torch_and_padding(tmp_path):
    layout = get_layout("ntu25")
    seq = _walking("ntu25", T=40, M=2)  # (2, T, V, 3)
    padded = np.concatenate([seq, np.zeros((2, 20, 25, 3))], axis=1)  # trailing zero frames are padding
    one = render_strip(torch.tensor(padded[:1]), layout, tmp_path / "one.png", num_frames=5, size=64)
    two = render_strip(torch.tensor(padded), layout, tmp_path / "two.png", num_frames=5, size=64)
    assert Image.open(one).size == Image.open(two).size == (320, 64)
    # The second person adds drawn pixels.
    assert _non_background(Image.open(two)) > _non_background(Image.open(one))
    # An absent (all-zero) second person draws nothing extra.
    absent = padded.copy()
    absent[1] = 0.0
    p3 = render_strip(absent, layout, tmp_path / "absent.png", num_frames=5, size=64)
    assert np.array_equal(np.asarray(Image.open(p3)), np.asarray(Image.open(one)))


def test_strip_overlay_and_highlight(tmp_path):
    layout = get_layout("kinect_v1_20")
    real = _walking("kinect_v1_20", T=20)[0]  # (T, V, 3)
    recon = real + 0.05
    known = np.ones((20, 20, 3), dtype=bool)
    known[:, list(layout.parts["left_arm"])] = False
    plain = render_strip(recon, layout, tmp_path / "plain.png", num_frames=4, size=120)
    both = render_strip(recon, layout, tmp_path / "both.png", num_frames=4, size=120, overlay=real, highlight=~known)
    a, b = np.asarray(Image.open(plain)), np.asarray(Image.open(both))
    assert a.shape == b.shape
    assert (a != b).any(axis=-1).sum() > 100
    assert (b == np.array([230, 0, 200], dtype=np.uint8)).all(axis=-1).any()  # highlight rings drawn


def test_whole_occluded_frame_gets_a_panel_border(tmp_path):
    real = _walking("kinect_v1_20", T=20)[0]  # (T, V, 3)
    known = np.ones((20, 20, 3), dtype=bool)
    known[:10] = False  # frames 0-9 fully occluded: strip panels 0 and 1 (frames 0 and 6) of 4
    path = render_strip(real, get_layout("kinect_v1_20"), tmp_path / "f.png", num_frames=4, size=120,
                        highlight=~known)
    img = np.asarray(Image.open(path))  # (H, 4 * 120, 3)
    hl = (img == np.array([230, 0, 200], dtype=np.uint8)).all(axis=-1)  # (H, W)
    top = img.shape[0] - 120  # panels sit below the optional caption
    for panel, bordered in ((0, True), (1, True), (2, False), (3, False)):
        x0 = panel * 120
        assert bool(hl[top + 60, x0 + 1]) == bordered and bool(hl[top + 60, x0 + 118]) == bordered
        assert bool(hl[top:, x0 : x0 + 120].any()) == bordered  # no joint rings on a bordered or clean frame


def test_gif_frame_count_and_size(tmp_path):
    layout = get_layout("ntu25")
    seq = _walking("ntu25", T=24, M=2)
    p = render_gif(seq, layout, tmp_path / "anim.gif", fps=10, size=(96, 72))
    img = Image.open(p)
    assert img.format == "GIF"
    assert img.n_frames == 24
    assert img.size == (96, 72)
    assert img.info.get("duration") == 100
    img.seek(12)
    assert _non_background(img) > 100
    p2 = render_gif(seq, layout.bones, tmp_path / "anim2.gif", size=64, stride=5, title="gen")
    img2 = Image.open(p2)
    assert img2.n_frames == 5 and img2.size == (64, 64 + CAPTION_H)


def test_grid_rows_and_captions(tmp_path):
    layout = get_layout("ntu25")
    real = _walking("ntu25", T=30)[0]
    noisy = real + np.random.default_rng(1).normal(scale=0.05, size=real.shape)
    p = render_grid([real, noisy, real[:10]], ["real", "noisy", "short"], layout, tmp_path / "grid.png",
                    num_frames=5, size=80)
    img = Image.open(p)
    assert img.size == (400, 3 * (CAPTION_H + 80))
    arr = np.asarray(img.convert("RGB"))
    for r in range(3):
        row = arr[r * (CAPTION_H + 80) : (r + 1) * (CAPTION_H + 80)]
        assert (row != np.array(BACKGROUND, dtype=np.uint8)).any(axis=-1).sum() > 200
        # The caption band holds text.
        assert (row[:CAPTION_H] != np.array(BACKGROUND, dtype=np.uint8)).any()


def test_invalid_input(tmp_path):
    layout = get_layout("ntu25")
    seq = _walking("ntu25")[0]
    with pytest.raises(ValueError, match="V=20"):
        render_strip(seq[:, :20], layout, tmp_path / "x.png")
    with pytest.raises(ValueError, match="outside"):
        render_strip(seq, [(0, 30)], tmp_path / "x.png")
    with pytest.raises(ValueError, match="view"):
        render_strip(seq, layout, tmp_path / "x.png", view="top")
    with pytest.raises(ValueError, match="labels"):
        render_grid([seq], ["a", "b"], layout, tmp_path / "g.png")
    with pytest.raises(ValueError, match="bool"):
        render_strip(seq, layout, tmp_path / "x.png", highlight=np.ones((30, 25)))


@pytest.mark.realdata
def test_real_nw_ucla_sequence(tmp_path, shared_data):
    """One real NW-UCLA sequence (Kinect v1, 20 joints) renders as a strip and a GIF."""
    import json

    src = shared_data / "nw_ucla" / "all_sqe" / "a01_s01_e00_v01.json"
    if not src.is_file():
        pytest.skip(f"real data not present: {src}")
    seq = np.asarray(json.loads(src.read_text())["skeletons"], dtype=np.float32)  # (T, 20, 3) metres
    layout = get_layout("kinect_v1_20")
    img = Image.open(render_strip(seq, layout, tmp_path / "ucla.png", num_frames=8, size=100, view="side"))
    assert img.size == (800, 100) and _non_background(img) > 500
    gif = Image.open(render_gif(seq, layout, tmp_path / "ucla.gif", size=80, stride=4))
    assert gif.n_frames == -(-seq.shape[0] // 4)
