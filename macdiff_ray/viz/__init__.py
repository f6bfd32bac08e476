"""Skeleton pictures (Pillow only): PNG strips, animated GIFs and captioned grids; see ``render.py``."""

from macdiff_ray.viz.render import render_gif, render_grid, render_strip, strip_image

__all__ = ["render_strip", "render_gif", "render_grid", "strip_image"]
