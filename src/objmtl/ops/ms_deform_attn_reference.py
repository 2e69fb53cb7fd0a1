"""Multi-scale deformable attention in plain PyTorch (``F.grid_sample``): the reference of the compiled op.

Used when the extension is unavailable, when ``OBJMTL_NO_EXT=1``, and during ONNX export (``GridSample``
needs opset >= 16). Same maths as the C++/CUDA kernels: bilinear sampling with zeros outside the map,
``align_corners=False`` (a location ``x`` in [0, 1] maps to pixel ``x * W - 0.5``).

By default the level sizes are read with ``spatial_shapes.tolist()``, which ``torch.jit`` tracing records as
constants; ``symbolic_sizes=True`` takes them as traced scalars of ``spatial_shapes`` instead, so a graph
traced at one input size slices and reshapes the value maps of another size correctly (same maths).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ms_deform_attn_reference"]


def _level_sizes(spatial_shapes: Tensor | Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    if isinstance(spatial_shapes, Tensor):
        return [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    return [(int(h), int(w)) for h, w in spatial_shapes]


def _level_bounds(spatial_shapes: Tensor | Sequence[Sequence[int]], num_levels: int,
                  symbolic_sizes: bool) -> list[tuple[int | Tensor, int | Tensor, int | Tensor, int | Tensor]]:
    """(start, end, H_l, W_l) of each level in S: Python ints, or 0-dim tensors of ``spatial_shapes``."""
    if symbolic_sizes:
        if not isinstance(spatial_shapes, Tensor):
            raise TypeError("ms_deform_attn_reference: symbolic_sizes needs spatial_shapes as a tensor")
        areas = spatial_shapes[:, 0] * spatial_shapes[:, 1]  # [L]
        starts = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])  # [L]
        return [(starts[level], starts[level] + areas[level], spatial_shapes[level, 0], spatial_shapes[level, 1])
                for level in range(num_levels)]  # traced scalars
    bounds = []
    start = 0
    for h, w in _level_sizes(spatial_shapes):
        bounds.append((start, start + h * w, h, w))
        start += h * w
    return bounds


def ms_deform_attn_reference(value: Tensor, spatial_shapes: Tensor | Sequence[Sequence[int]],
                             sampling_locations: Tensor, attention_weights: Tensor, *,
                             symbolic_sizes: bool = False) -> Tensor:
    """Sum over levels and points of attention-weighted bilinear samples of ``value``.

    Args:
        value: [N, S, M, D]; S = sum of H_l * W_l, levels concatenated in row-major order.
        spatial_shapes: [L, 2] (H_l, W_l) as a long tensor or a list of pairs (pairs keep the sizes
            symbolic when traced for ONNX).
        sampling_locations: [N, Lq, M, L, P, 2] (x, y) in [0, 1] of each level's map.
        attention_weights: [N, Lq, M, L, P].
        symbolic_sizes: Index and reshape with the level sizes as scalars of the ``spatial_shapes`` tensor
            (traced, not constants, under ``torch.jit`` tracing); the same values, as a transposed view.

    Returns:
        [N, Lq, M * D].
    """
    n, _, m, d = value.shape
    _, lq, _, num_levels, points, _ = sampling_locations.shape
    grids = 2 * sampling_locations - 1  # grid_sample's [-1, 1]
    sampled = []
    for level, (start, end, h, w) in enumerate(_level_bounds(spatial_shapes, num_levels, symbolic_sizes)):
        v = value[:, start:end]  # [N, H*W, M, D]
        v = v.flatten(2).transpose(1, 2).reshape(n * m, d, h, w)  # [N*M, D, H, W]
        g = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)  # [N*M, Lq, P, 2]
        sampled.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False))
    stacked = torch.stack(sampled, dim=-2).flatten(-2)  # [N*M, D, Lq, L*P]
    weights = attention_weights.transpose(1, 2).reshape(n * m, 1, lq, num_levels * points)
    out = (stacked * weights).sum(-1).view(n, m * d, lq).transpose(1, 2)
    return out if symbolic_sizes else out.contiguous()  # the traced graph keeps the transposed view
