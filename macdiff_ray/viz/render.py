"""Skeleton pictures with Pillow only: PNG strips, animated GIFs and captioned grids.

Input sequences follow the project layout: ``(T, V, C)`` for one person or ``(M, T, V, C)`` with persons, numpy
or torch, C >= 2 (C = 3 for the side view). An all-zero person is absent and not drawn; trailing all-zero frames
are padding and are skipped unless ``length`` is given.

Projection is orthographic: the ``front`` view draws (x, y), the ``side`` view (z, y), with y up. One scale and
offset is used for all frames of a strip (and, in a grid, for all rows by default), so motion and size compare
across panels. Bones are lines and joints dots, coloured by body part when ``parts`` (or a ``JointLayout``) is
given. An ``overlay`` sequence (e.g. the ground truth under a reconstruction) is drawn first in light grey, and
``highlight`` rings mark chosen joints (e.g. the occluded ones: ``highlight=~known_mask``); a frame whose joints
are all marked gets a panel border instead, so the drawn skeleton stays visible.

Pixel sizes are fixed by the arguments so that callers and tests can rely on them:
``render_strip``: width ``num_frames * panel_w``, height ``panel_h`` (+ ``CAPTION_H`` with a title);
``render_gif``: ``panel_w x panel_h`` per frame (+ ``CAPTION_H`` with a title);
``render_grid``: width ``num_frames * panel_w``, height ``rows * (CAPTION_H + panel_h)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "PART_COLORS",
    "CAPTION_H",
    "render_strip",
    "render_gif",
    "render_grid",
    "strip_image",
]

BACKGROUND = (255, 255, 255)
DEFAULT_COLOR = (90, 90, 90)
OVERLAY_COLOR = (185, 185, 185)
HIGHLIGHT_COLOR = (230, 0, 200)
TEXT_COLOR = (20, 20, 20)
#: Body-part colours (matplotlib's tab10 values, written out: no matplotlib dependency).
PART_COLORS = {
    "trunk": (70, 70, 70),
    "left_arm": (31, 119, 180),
    "right_arm": (214, 39, 40),
    "left_leg": (44, 160, 44),
    "right_leg": (255, 127, 14),
}
#: Height in pixels of a title / caption band.
CAPTION_H = 18
_MARGIN = 0.08  # fraction of the panel left free on each side

Size = Union[int, Tuple[int, int]]
Bones = Union[Sequence[Tuple[int, int]], Any]  # a list of (a, b) pairs or a JointLayout


# ----------------------------------------------------------------------------------------------------------------
# Input handling
# ----------------------------------------------------------------------------------------------------------------


def _panel_size(size: Size) -> Tuple[int, int]:
    w, h = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if int(w) < 16 or int(h) < 16:
        raise ValueError(f"size: panels need at least 16x16 pixels, got {w}x{h}")
    return int(w), int(h)


def _sequence(seq: Any, name: str) -> np.ndarray:
    """(T, V, C) or (M, T, V, C), numpy or torch -> float64 (M, T, V, C)."""
    if hasattr(seq, "detach") and hasattr(seq, "cpu"):
        seq = seq.detach().cpu().numpy()
    arr = np.asarray(seq, dtype=np.float64)
    if arr.ndim == 3:
        arr = arr[None]  # (1, T, V, C)
    if arr.ndim != 4:
        raise ValueError(f"{name}: expected shape (T, V, C) or (M, T, V, C), got {arr.shape}")
    if arr.shape[-1] < 2:
        raise ValueError(f"{name}: needs at least 2 coordinates, got C={arr.shape[-1]}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: contains NaN or inf values")
    return arr


def _bones_and_parts(
    bones: Bones, parts: Optional[Mapping[str, Sequence[int]]], V: int
) -> Tuple[list, Optional[Mapping[str, Sequence[int]]]]:
    """Accept a bone list or a JointLayout (which also gives the parts); validate indices against V."""
    if hasattr(bones, "bones") and hasattr(bones, "parts"):  # a JointLayout
        if parts is None:
            parts = bones.parts
        if bones.num_joints != V:
            raise ValueError(f"layout {bones.name!r} has {bones.num_joints} joints but the sequence has V={V}")
        bones = bones.bones
    pairs = [(int(a), int(b)) for a, b in bones]
    bad = [(a, b) for a, b in pairs if not (0 <= a < V and 0 <= b < V)]
    if bad:
        raise ValueError(f"bones {bad[:3]} reference joints outside [0, V={V})")
    if parts is not None:
        for k, idx in parts.items():
            if any(not 0 <= int(i) < V for i in idx):
                raise ValueError(f"parts[{k!r}] references joints outside [0, V={V})")
    return pairs, parts


def _joint_colors(V: int, parts: Optional[Mapping[str, Sequence[int]]]) -> list:
    colors = [DEFAULT_COLOR] * V
    if parts:
        for k, idx in parts.items():
            for i in idx:
                colors[int(i)] = PART_COLORS.get(k, DEFAULT_COLOR)
    return colors


def _project(arr: np.ndarray, view: str) -> np.ndarray:
    """(M, T, V, C) -> (M, T, V, 2) of (horizontal, up) coordinates."""
    if view == "front":
        return arr[..., [0, 1]]
    if view == "side":
        if arr.shape[-1] < 3:
            raise ValueError("view='side' needs C = 3 coordinates (it draws z against y)")
        return arr[..., [2, 1]]
    raise ValueError(f"view must be 'front' or 'side', got {view!r}")


def _valid_length(arr: np.ndarray, length: Optional[int]) -> int:
    T = arr.shape[1]
    if length is not None:
        if not 1 <= int(length) <= T:
            raise ValueError(f"length {length} is outside [1, T={T}]")
        return int(length)
    nonzero = np.flatnonzero(np.any(arr != 0, axis=(0, 2, 3)))  # frames where any person is non-zero
    return int(nonzero[-1]) + 1 if nonzero.size else T


def _highlight(mask: Any, M: int, T: int, V: int) -> np.ndarray:
    """bool mask (T, V), (T, V, C), (M, T, V) or (M, T, V, C) -> (M, T, V); True = ring the joint."""
    if hasattr(mask, "detach") and hasattr(mask, "cpu"):
        mask = mask.detach().cpu().numpy()
    m = np.asarray(mask)
    if m.dtype != np.bool_:
        raise ValueError(f"highlight: expected a bool mask, got dtype {m.dtype}")
    if m.ndim >= 3 and m.shape[-2] == V and m.shape[-1] != V:  # per-coordinate: ring if any coordinate is marked
        m = m.any(axis=-1)
    try:
        return np.broadcast_to(m, (M, T, V))
    except ValueError as e:
        raise ValueError(f"highlight shape {np.asarray(mask).shape} does not fit (M={M}, T={T}, V={V})") from e


class _Canvas:
    """World (horizontal, up) -> pixel mapping shared by all panels of one picture."""

    def __init__(self, points: np.ndarray, panel: Tuple[int, int]):
        # points: (P, 2) every drawn coordinate; an empty set gives a unit box.
        w, h = panel
        if points.size == 0:
            lo, hi = np.zeros(2), np.ones(2)
        else:
            lo, hi = points.min(axis=0), points.max(axis=0)  # (2,), (2,)
        span = np.maximum(hi - lo, 1e-6)  # (2,) a single point still gets a finite scale
        self.scale = min(w * (1 - 2 * _MARGIN) / span[0], h * (1 - 2 * _MARGIN) / span[1])
        self.center = (lo + hi) / 2  # (2,)
        self.panel = panel

    def to_px(self, xy: np.ndarray, x0: int, y0: int) -> np.ndarray:
        """(..., 2) world -> (..., 2) pixels inside the panel whose top-left corner is (x0, y0)."""
        w, h = self.panel
        px = x0 + w / 2 + (xy[..., 0] - self.center[0]) * self.scale
        py = y0 + h / 2 - (xy[..., 1] - self.center[1]) * self.scale  # y up in the world, down in the image
        return np.stack([px, py], axis=-1)


def _present(arr: np.ndarray) -> np.ndarray:
    """(M, T, V, C) -> (M,) bool, a person is present when any coordinate is non-zero."""
    return np.any(arr != 0, axis=(1, 2, 3))


def _points(arrs: Sequence[np.ndarray], frames: np.ndarray, view: str) -> np.ndarray:
    pts = []
    for a in arrs:
        p = _project(a[_present(a)][:, frames], view)  # (M', F, V, 2)
        pts.append(p.reshape(-1, 2))
    return np.concatenate(pts) if pts else np.zeros((0, 2))


def _font(px: int):
    try:
        return ImageFont.load_default(size=px)  # Pillow >= 10.1 (scalable default font)
    except TypeError:  # older Pillow: the fixed-size bitmap font
        return ImageFont.load_default()


def _draw_skeleton(
    draw: ImageDraw.ImageDraw,
    xy: np.ndarray,
    bones: list,
    colors: Optional[list],
    radius: float,
    width: int,
) -> None:
    """xy: (V, 2) pixels. colors None -> overlay grey."""
    for a, b in bones:
        c = OVERLAY_COLOR if colors is None else colors[a]
        draw.line([tuple(xy[a]), tuple(xy[b])], fill=c, width=width)
    for v in range(xy.shape[0]):
        c = OVERLAY_COLOR if colors is None else colors[v]
        x, y = xy[v]
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=c)


def _draw_panels(
    img: Image.Image,
    top: int,
    arr: np.ndarray,
    frames: np.ndarray,
    canvas: _Canvas,
    bones: list,
    colors: list,
    view: str,
    overlay: Optional[np.ndarray],
    ring: Optional[np.ndarray],
    frame_labels: bool,
) -> None:
    """Draw one panel per entry of ``frames`` side by side, starting at pixel row ``top``."""
    draw = ImageDraw.Draw(img)
    w, h = canvas.panel
    radius = max(1.5, min(w, h) / 60)
    width = max(1, round(min(w, h) / 80))
    font = _font(max(8, min(12, h // 10)))
    proj = _project(arr, view)  # (M, T, V, 2)
    present = _present(arr)  # (M,)
    proj_ov = _project(overlay, view) if overlay is not None else None
    present_ov = _present(overlay) if overlay is not None else None
    for i, t in enumerate(frames):
        x0 = i * w
        if i > 0:
            draw.line([(x0, top), (x0, top + h - 1)], fill=(230, 230, 230))
        if proj_ov is not None:
            for m in np.flatnonzero(present_ov):
                _draw_skeleton(draw, canvas.to_px(proj_ov[m, t], x0, top), bones, None, radius, width)
        for m in np.flatnonzero(present):
            xy = canvas.to_px(proj[m, t], x0, top)  # (V, 2)
            _draw_skeleton(draw, xy, bones, colors, radius, width)
            if ring is not None:
                marked = np.flatnonzero(ring[m, t])
                if len(marked) == ring.shape[-1]:  # the whole frame: a panel border keeps the skeleton visible
                    draw.rectangle([x0 + 1, top + 1, x0 + w - 2, top + h - 2], outline=HIGHLIGHT_COLOR, width=2)
                    continue
                rr = radius * 1.8
                for v in marked:
                    x, y = xy[v]
                    draw.ellipse([x - rr, y - rr, x + rr, y + rr], outline=HIGHLIGHT_COLOR, width=1)
        if frame_labels:
            draw.text((x0 + 3, top + 2), f"t={int(t)}", fill=TEXT_COLOR, font=font)


def _check_overlay(overlay: Any, arr: np.ndarray) -> Optional[np.ndarray]:
    if overlay is None:
        return None
    ov = _sequence(overlay, "overlay")
    if ov.shape[1:] != arr.shape[1:] or ov.shape[0] not in (1, arr.shape[0]):
        raise ValueError(f"overlay shape {ov.shape} does not match the sequence shape {arr.shape}")
    return ov


def _frames(length: int, num_frames: int) -> np.ndarray:
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    return np.linspace(0, length - 1, num_frames).round().astype(int)  # (F,) evenly spaced, may repeat


# ----------------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------------


def strip_image(
    seq: Any,
    bones: Bones,
    *,
    num_frames: int = 8,
    size: Size = 160,
    view: str = "front",
    title: Optional[str] = None,
    parts: Optional[Mapping[str, Sequence[int]]] = None,
    overlay: Any = None,
    highlight: Any = None,
    length: Optional[int] = None,
    canvas: Optional[_Canvas] = None,
) -> Image.Image:
    """The picture of :func:`render_strip` as a PIL RGB image (not saved)."""
    arr = _sequence(seq, "seq")  # (M, T, V, C)
    M, T, V, _ = arr.shape
    bone_list, parts = _bones_and_parts(bones, parts, V)
    ov = _check_overlay(overlay, arr)
    ring = _highlight(highlight, M, T, V) if highlight is not None else None
    frames = _frames(_valid_length(arr, length), num_frames)  # (F,)
    w, h = _panel_size(size)
    if canvas is None:
        canvas = _Canvas(_points([arr] + ([ov] if ov is not None else []), frames, view), (w, h))
    top = CAPTION_H if title is not None else 0
    img = Image.new("RGB", (num_frames * w, top + h), BACKGROUND)
    if title is not None:
        ImageDraw.Draw(img).text((4, 3), title, fill=TEXT_COLOR, font=_font(12))
    _draw_panels(img, top, arr, frames, canvas, bone_list, _joint_colors(V, parts), view, ov, ring, True)
    return img


def render_strip(
    seq: Any,
    bones: Bones,
    path: Union[str, Path],
    *,
    num_frames: int = 8,
    size: Size = 160,
    view: str = "front",
    title: Optional[str] = None,
    parts: Optional[Mapping[str, Sequence[int]]] = None,
    overlay: Any = None,
    highlight: Any = None,
    length: Optional[int] = None,
) -> Path:
    """Save a PNG strip of ``num_frames`` evenly spaced frames of one sequence.

    Args:
        seq: ``(T, V, C)`` or ``(M, T, V, C)``; absent persons (all zeros) are skipped.
        bones: ``(a, b)`` joint pairs, or a ``JointLayout`` (its bones, and its parts for colours).
        path: output ``.png`` file (parent folders are created).
        num_frames: panels; frames are ``linspace(0, length - 1, num_frames)`` rounded (repeats if fewer frames).
        size: panel size in pixels, ``int`` (square) or ``(width, height)``.
        view: ``"front"`` draws (x, y), ``"side"`` draws (z, y); y up.
        title: optional caption band on top.
        parts: body part -> joint indices, for colours (overrides the layout's).
        overlay: optional second sequence of the same shape drawn underneath in grey (e.g. the ground truth).
        highlight: optional bool ``(T, V)``, ``(T, V, C)``, ``(M, T, V)`` or ``(M, T, V, C)``, True = draw a ring
            (e.g. ``~known_mask`` for occluded joints).
        length: valid frames; default: up to the last frame that is not all zeros.

    Returns:
        The path written. Image size: ``(num_frames * panel_w, panel_h [+ CAPTION_H])``.
    """
    img = strip_image(
        seq, bones, num_frames=num_frames, size=size, view=view, title=title, parts=parts, overlay=overlay,
        highlight=highlight, length=length,
    )
    return _save(img, path)


def render_gif(
    seq: Any,
    bones: Bones,
    path: Union[str, Path],
    *,
    fps: float = 15,
    size: Size = 240,
    view: str = "front",
    title: Optional[str] = None,
    parts: Optional[Mapping[str, Sequence[int]]] = None,
    overlay: Any = None,
    highlight: Any = None,
    length: Optional[int] = None,
    stride: int = 1,
) -> Path:
    """Save an animated GIF with one frame per ``stride``-th valid frame (looping).

    Arguments as :func:`render_strip`; each GIF frame is one panel (``size``) with the frame index written in its
    corner, which keeps consecutive frames distinct (Pillow merges identical ones). GIF timing has 10 ms steps,
    so ``fps`` is rounded to the nearest frame duration.

    Returns:
        The path written; the GIF has ``ceil(length / stride)`` frames.
    """
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    arr = _sequence(seq, "seq")  # (M, T, V, C)
    M, T, V, _ = arr.shape
    bone_list, parts = _bones_and_parts(bones, parts, V)
    ov = _check_overlay(overlay, arr)
    ring = _highlight(highlight, M, T, V) if highlight is not None else None
    frames = np.arange(0, _valid_length(arr, length), stride)  # (F,)
    w, h = _panel_size(size)
    canvas = _Canvas(_points([arr] + ([ov] if ov is not None else []), frames, view), (w, h))
    colors = _joint_colors(V, parts)
    top = CAPTION_H if title is not None else 0
    images = []
    for t in frames:
        img = Image.new("RGB", (w, top + h), BACKGROUND)
        if title is not None:
            ImageDraw.Draw(img).text((4, 3), title, fill=TEXT_COLOR, font=_font(12))
        _draw_panels(img, top, arr, np.array([t]), canvas, bone_list, colors, view, ov, ring, True)
        images.append(img)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(
        path, format="GIF", save_all=True, append_images=images[1:], duration=round(1000.0 / fps), loop=0
    )
    return path


def render_grid(
    sequences: Sequence[Any],
    labels: Sequence[str],
    bones: Bones,
    path: Union[str, Path],
    *,
    num_frames: int = 8,
    size: Size = 120,
    view: str = "front",
    parts: Optional[Mapping[str, Sequence[int]]] = None,
    overlays: Optional[Sequence[Any]] = None,
    highlights: Optional[Sequence[Any]] = None,
    shared_scale: bool = True,
) -> Path:
    """Save a PNG with one captioned strip per sequence (e.g. real / occluded / reconstructed, for the README).

    Args:
        sequences: R sequences, each ``(T, V, C)`` or ``(M, T, V, C)`` with the same V (T may differ).
        labels: R captions, drawn in a band above each row.
        bones, num_frames, size, view, parts: as :func:`render_strip`.
        overlays, highlights: optional per-row lists (entries may be None).
        shared_scale: one scale for all rows (rows compare directly); False: one per row.

    Returns:
        The path written. Image size: ``(num_frames * panel_w, R * (CAPTION_H + panel_h))``.
    """
    if len(sequences) == 0:
        raise ValueError("render_grid: no sequences given")
    if len(labels) != len(sequences):
        raise ValueError(f"render_grid: {len(labels)} labels for {len(sequences)} sequences")
    rows = len(sequences)
    overlays = list(overlays) if overlays is not None else [None] * rows
    highlights = list(highlights) if highlights is not None else [None] * rows
    if len(overlays) != rows or len(highlights) != rows:
        raise ValueError(f"render_grid: overlays/highlights need {rows} entries (None allowed)")
    arrs = [_sequence(s, f"sequences[{i}]") for i, s in enumerate(sequences)]
    ovs = [_check_overlay(o, a) for o, a in zip(overlays, arrs)]
    w, h = _panel_size(size)
    canvas = None
    if shared_scale:
        pts = []
        for a, o in zip(arrs, ovs):
            fr = _frames(_valid_length(a, None), num_frames)
            pts.append(_points([a] + ([o] if o is not None else []), fr, view))
        canvas = _Canvas(np.concatenate(pts), (w, h))
    grid = Image.new("RGB", (num_frames * w, rows * (CAPTION_H + h)), BACKGROUND)
    for r, (a, o, hl, label) in enumerate(zip(arrs, ovs, highlights, labels)):
        strip = strip_image(
            a, bones, num_frames=num_frames, size=(w, h), view=view, title=str(label), parts=parts, overlay=o,
            highlight=hl, canvas=canvas,
        )
        grid.paste(strip, (0, r * (CAPTION_H + h)))
    return _save(grid, path)


def _save(img: Image.Image, path: Union[str, Path]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG")
    return path
