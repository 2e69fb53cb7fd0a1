"""Top-down geometry: person box -> crop region, the crop's affine map, heatmap coordinates.

Coordinates are continuous pixels with pixel centres at integers (OpenCV's ``warpAffine``
convention): an image of width ``W`` spans ``[-0.5, W - 0.5]``. A heatmap cell ``j`` of stride ``s``
covers input pixels ``[s * j, s * j + s)``, so its centre is input ``(j + 0.5) * s - 0.5``; with this
convention mirroring the input (``x -> W - 1 - x``) mirrors the heatmap exactly (``j -> w - 1 - j``),
and the flip test needs no one-pixel shift.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["affine_matrix", "apply_affine", "box_to_region", "from_heatmap", "invert_affine", "to_heatmap"]


def box_to_region(box: Sequence[float], *, aspect: float, padding: float = 1.25) -> tuple[np.ndarray, np.ndarray]:
    """The crop region of an xyxy box: its centre and a (w, h) of ``aspect`` = w / h that holds it.

    The shorter side is grown to the aspect ratio (the box is never squeezed), then both sides are
    multiplied by ``padding``.

    Returns:
        ``center`` (2,) and ``size`` (2,) = (w, h), float64, in source pixels.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1, y2 - y1
    if w > aspect * h:
        h = w / aspect
    else:
        w = h * aspect
    return np.array([(x1 + x2) / 2, (y1 + y2) / 2]), np.array([w, h]) * padding


def affine_matrix(*, center: Sequence[float], size: Sequence[float], output_size: Sequence[int],
                  rotation: float = 0.0, flip: bool = False) -> np.ndarray:
    """The 2 x 3 map from source pixels to crop pixels.

    The region of ``size`` (w, h) around ``center``, turned by ``rotation`` degrees (counter-clockwise
    as seen on the picture), fills the crop of ``output_size`` (w, h); ``flip`` mirrors the crop.
    """
    ow, oh = (float(v) for v in output_size)
    scale = ow / float(size[0])
    theta = math.radians(rotation)
    c, s = math.cos(theta), math.sin(theta)
    to_origin = np.array([[1, 0, -center[0]], [0, 1, -center[1]], [0, 0, 1]], np.float64)
    # y points down in images: a counter-clockwise turn on screen is [[c, s], [-s, c]]
    turn = np.array([[c * scale, s * scale, 0], [-s * scale, c * scale, 0], [0, 0, 1]], np.float64)
    to_crop = np.array([[1, 0, (ow - 1) / 2], [0, 1, (oh - 1) / 2], [0, 0, 1]], np.float64)
    m = to_crop @ turn @ to_origin
    if flip:
        m = np.array([[-1, 0, ow - 1], [0, 1, 0], [0, 0, 1]], np.float64) @ m
    return m[:2]


def invert_affine(m: np.ndarray) -> np.ndarray:
    """The inverse of a 2 x 3 affine map (crop -> source for :func:`affine_matrix`'s output)."""
    full = np.vstack([np.asarray(m, np.float64).reshape(2, 3), [0, 0, 1]])
    return np.linalg.inv(full)[:2]


def apply_affine(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``points`` (..., 2) mapped by the 2 x 3 matrix ``m``."""
    points = np.asarray(points, np.float64)
    return points @ m[:, :2].T + m[:, 2]


def to_heatmap(xy: np.ndarray, stride: float) -> np.ndarray:
    """Input-crop pixels -> heatmap cells (see the module docstring)."""
    return (np.asarray(xy, np.float64) + 0.5) / stride - 0.5


def from_heatmap(xy: np.ndarray, stride: float) -> np.ndarray:
    """Heatmap cells -> input-crop pixels; works on numpy arrays and tensors."""
    return (xy + 0.5) * stride - 0.5
