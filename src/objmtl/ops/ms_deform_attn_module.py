"""``MSDeformAttn``: the projections around the op, initialised as in Deformable DETR (Zhu et al., ICLR 2021).

``DeformAttention`` is the same module (same arguments and weights) whose ONNX trace keeps the level sizes
symbolic. In eager mode it changes nothing (the op's reference or compiled kernels run). Under ``torch.jit``
tracing (the ``dynamo=False`` ONNX export) the op's reference reads the level sizes with
``spatial_shapes.tolist()``, which the tracer records as constants: a graph exported at one input size would
slice and reshape the value maps of another size wrongly. ``DeformAttention``, while tracing, runs the
reference with ``symbolic_sizes=True`` (the sizes taken as traced scalars of ``spatial_shapes``), so the
exported graph follows the input's height and width. The maths is the reference's (bilinear ``grid_sample``,
zeros outside, ``align_corners=False``); a test holds eager and ONNX Runtime equal at a size other than the
traced one.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from objmtl.ops.ms_deform_attn import ms_deform_attn
from objmtl.ops.ms_deform_attn_reference import ms_deform_attn_reference

__all__ = ["DeformAttention", "MSDeformAttn"]


class MSDeformAttn(nn.Module):
    """Each query attends to ``n_points`` learned locations per head and level around its reference point.

    Args:
        d_model: Channels of queries and values; divisible by ``n_heads``.
        n_levels: Feature levels.
        n_heads: Attention heads.
        n_points: Sampling points per head and level.
        im2col_step: Batch chunk of the compiled kernels (memory vs speed; no effect on the result).
    """

    # under torch.jit tracing, the reference with the level sizes as traced scalars (see DeformAttention)
    _symbolic_sizes_when_traced = False

    def __init__(self, *, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4,
                 im2col_step: int = 64) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.d_model, self.n_levels, self.n_heads, self.n_points = d_model, n_levels, n_heads, n_points
        self.im2col_step = im2col_step
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Offsets start on a ring of directions, one per head, at 1..P steps; uniform attention."""
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)  # [M, 2]
        grid = grid / grid.abs().max(-1, keepdim=True).values
        grid = grid.view(self.n_heads, 1, 1, 2).repeat(1, self.n_levels, self.n_points, 1)
        grid = grid * torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for proj in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)

    def forward(self, query: Tensor, reference_points: Tensor, input_flatten: Tensor, spatial_shapes: Tensor,
                level_start_index: Tensor, input_padding_mask: Tensor | None = None) -> Tensor:
        """Attend.

        Args:
            query: [N, Lq, C].
            reference_points: [N, Lq, L, 2] (x, y) in [0, 1], or [N, Lq, L, 4] (cx, cy, w, h) boxes whose
                size scales the offsets.
            input_flatten: [N, S, C], levels concatenated.
            spatial_shapes: [L, 2] long (H_l, W_l).
            level_start_index: [L] long, start of each level in S.
            input_padding_mask: [N, S] bool, True at padding (those values are zeroed).

        Returns:
            [N, Lq, C].
        """
        n, lq, _ = query.shape
        s = input_flatten.shape[1]
        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        value = value.view(n, s, self.n_heads, self.d_model // self.n_heads)
        offsets = self.sampling_offsets(query).view(n, lq, self.n_heads, self.n_levels, self.n_points, 2)
        weights = self.attention_weights(query).view(n, lq, self.n_heads, self.n_levels * self.n_points)
        weights = weights.softmax(-1).view(n, lq, self.n_heads, self.n_levels, self.n_points)
        if reference_points.shape[-1] == 2:
            normalizer = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1).to(offsets)  # [L, 2]
            locations = (reference_points[:, :, None, :, None, :]
                         + offsets / normalizer[None, None, None, :, None, :])
        elif reference_points.shape[-1] == 4:
            locations = (reference_points[:, :, None, :, None, :2]
                         + offsets / self.n_points * reference_points[:, :, None, :, None, 2:] * 0.5)
        else:
            raise ValueError(f"reference_points' last dimension must be 2 or 4, got {reference_points.shape[-1]}")
        if self._symbolic_sizes_when_traced and torch.jit.is_tracing():
            out = ms_deform_attn_reference(value, spatial_shapes, locations, weights, symbolic_sizes=True)
        else:
            out = ms_deform_attn(value, spatial_shapes, level_start_index, locations, weights, self.im2col_step)
        return self.output_proj(out)


class DeformAttention(MSDeformAttn):
    """:class:`MSDeformAttn` (same arguments and weights) with symbolic level sizes when traced; ``spatial_shapes``
    must come from the feature maps' traced sizes when exporting (see the module's docstring)."""

    _symbolic_sizes_when_traced = True
