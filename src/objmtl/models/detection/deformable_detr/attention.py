"""Multi-scale deformable attention whose ONNX trace keeps the level sizes symbolic.

``objmtl.ops.MSDeformAttn`` is the op; this subclass changes nothing in eager mode (the op's reference or
compiled kernels run). Under ``torch.jit`` tracing (the ``dynamo=False`` ONNX export) the op's reference
reads the level sizes with ``spatial_shapes.tolist()``, which the tracer records as constants: a graph
exported at one input size would slice and reshape the value maps of another size wrongly. Here, while
tracing, the same sampling runs with the sizes taken as traced scalars of ``spatial_shapes``, so the
exported graph follows the input's height and width. The maths is the reference's (bilinear
``grid_sample``, zeros outside, ``align_corners=False``); a test holds eager and ONNX Runtime equal at a
size other than the traced one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from objmtl.ops import MSDeformAttn

__all__ = ["DeformAttention"]


def _sample_traced(value: Tensor, spatial_shapes: Tensor, locations: Tensor, weights: Tensor) -> Tensor:
    """The reference's weighted bilinear sampling with traced level sizes.

    Args:
        value: [N, S, M, D].
        spatial_shapes: [L, 2] long (H_l, W_l), computed from the traced feature maps.
        locations: [N, Lq, M, L, P, 2] (x, y) in [0, 1].
        weights: [N, Lq, M, L, P].

    Returns:
        [N, Lq, M * D].
    """
    n, _, m, d = value.shape
    _, lq, _, num_levels, points, _ = locations.shape
    grids = 2 * locations - 1  # grid_sample's [-1, 1]
    areas = spatial_shapes[:, 0] * spatial_shapes[:, 1]  # [L]
    starts = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])  # [L]
    sampled = []
    for level in range(num_levels):
        h, w = spatial_shapes[level, 0], spatial_shapes[level, 1]  # traced scalars
        v = value[:, starts[level]:starts[level] + areas[level]]  # [N, H*W, M, D]
        v = v.flatten(2).transpose(1, 2).reshape(n * m, d, h, w)  # [N*M, D, H, W]
        g = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)  # [N*M, Lq, P, 2]
        sampled.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False))
    stacked = torch.stack(sampled, dim=-2).flatten(-2)  # [N*M, D, Lq, L*P]
    w8 = weights.transpose(1, 2).reshape(n * m, 1, lq, num_levels * points)
    out = (stacked * w8).sum(-1).view(n, m * d, lq)
    return out.transpose(1, 2)  # [N, Lq, M*D]


class DeformAttention(MSDeformAttn):
    """:class:`objmtl.ops.MSDeformAttn` (same arguments and weights) with symbolic level sizes when traced."""

    def forward(self, query: Tensor, reference_points: Tensor, input_flatten: Tensor, spatial_shapes: Tensor,
                level_start_index: Tensor, input_padding_mask: Tensor | None = None) -> Tensor:
        """See :meth:`objmtl.ops.MSDeformAttn.forward`; ``spatial_shapes`` must come from the feature maps'
        traced sizes when exporting."""
        if not torch.jit.is_tracing():
            return super().forward(query, reference_points, input_flatten, spatial_shapes, level_start_index,
                                   input_padding_mask)
        n, lq, _ = query.shape
        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        value = value.view(n, -1, self.n_heads, self.d_model // self.n_heads)  # [N, S, M, D]
        offsets = self.sampling_offsets(query).view(n, lq, self.n_heads, self.n_levels, self.n_points, 2)
        weights = self.attention_weights(query).view(n, lq, self.n_heads, self.n_levels * self.n_points)
        weights = weights.softmax(-1).view(n, lq, self.n_heads, self.n_levels, self.n_points)
        if reference_points.shape[-1] == 2:
            wh = spatial_shapes.flip(-1).to(offsets)  # [L, 2] (W_l, H_l)
            locations = reference_points[:, :, None, :, None, :] + offsets / wh[None, None, None, :, None, :]
        else:
            locations = (reference_points[:, :, None, :, None, :2]
                         + offsets / self.n_points * reference_points[:, :, None, :, None, 2:] * 0.5)
        return self.output_proj(_sample_traced(value, spatial_shapes, locations, weights))
