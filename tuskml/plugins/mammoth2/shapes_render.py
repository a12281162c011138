"""Rasterising shapes-world scenes into uint8 RGB images (numpy, crisp edges, no anti-aliasing).

Crisp, flat-coloured shapes on a black background keep the detector exact on ground truth; the
generative model must learn to produce the same flat colours to score well.
"""

from __future__ import annotations

import numpy as np

from tuskml.plugins.mammoth2.configs_data import BACKGROUND, PALETTE
from tuskml.plugins.mammoth2.shapes_scene import Scene, ShapeObject, ShapesWorldError

#: an object's side at 32 px, as a fraction of its cell's side
OBJECT_FRACTION = 0.65


def object_geometry(obj: ShapeObject, size: int) -> tuple[float, float, float]:
    """(centre x, centre y, side) in pixels of ``obj`` in an image of ``size`` pixels."""
    scale = size / 32.0
    cell = size / 2.0
    side = OBJECT_FRACTION * cell + obj.ds * scale
    cx = (obj.col + 0.5) * cell + obj.dx * scale
    cy = (obj.row + 0.5) * cell + obj.dy * scale
    return cx, cy, side


def object_mask(obj: ShapeObject, size: int) -> np.ndarray:
    """Bool[size, size]: the pixels ``obj`` covers (pixel centres inside the shape)."""
    cx, cy, side = object_geometry(obj, size)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    half = side / 2.0
    if obj.shape == "square":
        return (np.abs(xs - cx) <= half) & (np.abs(ys - cy) <= half)
    if obj.shape == "circle":
        return (xs - cx) ** 2 + (ys - cy) ** 2 <= half**2
    if obj.shape == "triangle":  # apex up, base down
        top, bottom = cy - half, cy + half
        frac = (ys - top) / max(bottom - top, 1e-6)
        return (ys >= top) & (ys <= bottom) & (np.abs(xs - cx) <= frac * half)
    raise ShapesWorldError(f"cannot draw shape {obj.shape!r}")


def render(scene: Scene, size: int = 32) -> np.ndarray:
    """uint8 [size, size, 3] image of ``scene``."""
    if size < 16 or size % 16:
        raise ShapesWorldError(f"image size must be a multiple of 16 and at least 16, got {size}")
    image = np.empty((size, size, 3), dtype=np.uint8)
    image[:] = BACKGROUND
    for obj in scene.objects:
        image[object_mask(obj, size)] = PALETTE[obj.colour]
    return image


def cell_mask(cell: int, size: int) -> np.ndarray:
    """Bool[size, size]: the pixels of one grid cell (the region an edit of that cell may change)."""
    mask = np.zeros((size, size), dtype=bool)
    half = size // 2
    r, c = divmod(cell, 2)
    mask[r * half:(r + 1) * half, c * half:(c + 1) * half] = True
    return mask
