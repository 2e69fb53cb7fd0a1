"""Anchor grids and the ``DeltaXYWH`` box coder (mmdet's convention), written to trace cleanly for ONNX.

Boxes are ``(x1, y1, x2, y2)`` in pixels. A box's centre is ``((x1 + x2) / 2, (y1 + y2) / 2)`` and its size
``(x2 - x1, y2 - y1)``, without mmdet v1's ``+ 1``. The coder only broadcasts with plain arithmetic on
``[..., i]`` slices and stacks the result: no ``expand_as``/``repeat`` of mean or std tensors (whose ONNX
export once produced wrong values, ObjectiveMTL FAQ 13), no in-place writes into slices, and no Python
branch on tensor values, so an exported graph is right for any number of anchors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["DeltaXYWHCoder", "anchor_points_and_boxes"]


def _centre_size(boxes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(cx, cy, w, h)`` of ``boxes`` ``(..., 4)``, each ``(...)``."""
    x1, y1, x2, y2 = boxes[..., 0], boxes[..., 1], boxes[..., 2], boxes[..., 3]
    return (x1 + x2) * 0.5, (y1 + y2) * 0.5, x2 - x1, y2 - y1


class DeltaXYWHCoder:
    """Encodes boxes as normalised offsets from anchors and decodes them back (mmdet ``DeltaXYWHBBoxCoder``).

    ``encode`` gives ``((dx, dy, dw, dh) - means) / stds`` with ``dx = (gx - ax) / aw``,
    ``dy = (gy - ay) / ah``, ``dw = log(gw / aw)``, ``dh = log(gh / ah)``. ``decode`` inverts it, clamping
    ``dw`` and ``dh`` to ``[-clip_ratio, clip_ratio]`` (mmdet's ``wh_ratio_clip = 16 / 1000``), so no box
    grows or shrinks by more than ``exp(clip_ratio)`` relative to its anchor.

    Args:
        means: Offsets subtracted from the raw deltas, one per ``(dx, dy, dw, dh)``.
        stds: Divisors of the raw deltas (after ``means``), all > 0.
        clip_ratio: ``decode`` clamps ``dw`` and ``dh`` (log scale) to ``[-clip_ratio, clip_ratio]``.
    """

    def __init__(
        self,
        *,
        means: Sequence[float] = (0.0, 0.0, 0.0, 0.0),
        stds: Sequence[float] = (0.1, 0.1, 0.2, 0.2),
        clip_ratio: float = math.log(1000 / 16),
    ) -> None:
        if len(means) != 4 or len(stds) != 4:
            raise ValueError(f"means and stds need 4 values each, got {len(means)} and {len(stds)}")
        if min(stds) <= 0 or clip_ratio <= 0:
            raise ValueError(
                f"stds and clip_ratio must be positive, got stds={stds}, clip_ratio={clip_ratio}"
            )
        # Python floats, not tensors: they become graph constants and keep the input's dtype and device.
        self.means = tuple(float(m) for m in means)
        self.stds = tuple(float(s) for s in stds)
        self.clip_ratio = float(clip_ratio)

    def encode(self, anchors: Tensor, boxes: Tensor) -> Tensor:
        """Deltas that turn ``anchors`` into ``boxes``.

        Args:
            anchors: ``(..., 4)`` xyxy with positive width and height; broadcasts against ``boxes``.
            boxes: ``(..., 4)`` xyxy target boxes with positive width and height (else ``dw``/``dh`` are
                ``-inf``).

        Returns:
            ``(..., 4)`` normalised deltas ``(dx, dy, dw, dh)``, the broadcast shape of the inputs.
        """
        ax, ay, aw, ah = _centre_size(anchors)
        gx, gy, gw, gh = _centre_size(boxes)
        raw = ((gx - ax) / aw, (gy - ay) / ah, torch.log(gw / aw), torch.log(gh / ah))
        return torch.stack([(d - m) / s for d, m, s in zip(raw, self.means, self.stds, strict=True)], dim=-1)

    def decode(self, anchors: Tensor, deltas: Tensor, *, max_shape: tuple[int, int] | None = None) -> Tensor:
        """Boxes from ``anchors`` moved by ``deltas``.

        Args:
            anchors: ``(A, 4)`` or ``(N, A, 4)`` xyxy; broadcasts against ``deltas`` (e.g. one ``(A, 4)``
                anchor set for a batch of ``(N, A, 4)`` deltas).
            deltas: ``(..., A, 4)`` normalised deltas ``(dx, dy, dw, dh)``.
            max_shape: ``(height, width)`` of the image: x is clamped to ``[0, width]``, y to
                ``[0, height]``; ``None`` leaves boxes unclipped.

        Returns:
            ``(..., A, 4)`` xyxy boxes: the broadcast shape and promoted dtype of the inputs.
        """
        ax, ay, aw, ah = _centre_size(anchors)  # each (A,) or (N, A)
        m, s = self.means, self.stds
        dx = deltas[..., 0] * s[0] + m[0]  # (..., A)
        dy = deltas[..., 1] * s[1] + m[1]
        dw = torch.clamp(deltas[..., 2] * s[2] + m[2], min=-self.clip_ratio, max=self.clip_ratio)
        dh = torch.clamp(deltas[..., 3] * s[3] + m[3], min=-self.clip_ratio, max=self.clip_ratio)
        cx, cy = ax + aw * dx, ay + ah * dy
        half_w, half_h = aw * torch.exp(dw) * 0.5, ah * torch.exp(dh) * 0.5
        x1, y1, x2, y2 = cx - half_w, cy - half_h, cx + half_w, cy + half_h
        if max_shape is not None:  # a Python argument, not a tensor value: the traced graph has no branch
            height, width = float(max_shape[0]), float(max_shape[1])
            x1, x2 = torch.clamp(x1, min=0.0, max=width), torch.clamp(x2, min=0.0, max=width)
            y1, y2 = torch.clamp(y1, min=0.0, max=height), torch.clamp(y2, min=0.0, max=height)
        return torch.stack([x1, y1, x2, y2], dim=-1)  # (..., A, 4)


def anchor_points_and_boxes(
    feature_sizes: Sequence[tuple[int, int]],
    strides: Sequence[int],
    *,
    octave_base_scale: int = 8,
    offset: float = 0.5,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> list[tuple[Tensor, Tensor]]:
    """Anchor points and one square anchor per location for each feature level (ATSS, FCOS).

    Location ``(y, x)`` of a level with stride ``s`` has the point ``((x + offset) * s, (y + offset) * s)``
    and the anchor of side ``octave_base_scale * s`` centred there. Locations are in row-major order, as a
    ``(H, W)`` feature map flattens. ``offset=0.5`` centres points in their cells (the ATSS and FCOS papers);
    mmdet's ATSS anchor generator uses ``offset=0``.

    Args:
        feature_sizes: ``(H, W)`` of each level.
        strides: Stride of each level, in pixels.
        octave_base_scale: Anchor side in units of the level's stride.
        offset: Position of the point inside its cell, in units of the stride.
        device: Device of the returned tensors.
        dtype: Floating dtype of the returned tensors.

    Returns:
        Per level ``(points, anchors)``: points ``(H * W, 2)`` as ``(x, y)`` and anchors ``(H * W, 4)`` xyxy.
    """
    if len(feature_sizes) != len(strides):
        raise ValueError(f"{len(feature_sizes)} feature sizes but {len(strides)} strides")
    levels = []
    for (height, width), stride in zip(feature_sizes, strides, strict=True):
        xs = (torch.arange(width, device=device, dtype=dtype) + offset) * stride  # (W,)
        ys = (torch.arange(height, device=device, dtype=dtype) + offset) * stride  # (H,)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")  # each (H, W)
        points = torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=-1)  # (H * W, 2)
        half = 0.5 * octave_base_scale * stride
        anchors = torch.cat([points - half, points + half], dim=-1)  # (H * W, 4)
        levels.append((points, anchors))
    return levels
