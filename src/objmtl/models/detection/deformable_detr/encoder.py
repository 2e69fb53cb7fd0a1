"""The deformable encoder: every cell of every level attends to a few points around itself on all levels."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from objmtl.ops import DeformAttention

__all__ = ["DeformableEncoder", "DeformableEncoderLayer", "FeedForward", "encoder_reference_points"]


class FeedForward(nn.Module):
    """Post-norm residual feed-forward block: ``norm(x + drop(W2 drop(relu(W1 x))))``."""

    def __init__(self, *, d_model: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        self.linear1, self.linear2 = nn.Linear(d_model, dim_feedforward), nn.Linear(dim_feedforward, d_model)
        self.dropout1, self.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor) -> Tensor:
        """[N, L, C] -> [N, L, C]."""
        return self.norm(x + self.dropout2(self.linear2(self.dropout1(F.relu(self.linear1(x))))))


class DeformableEncoderLayer(nn.Module):
    """Deformable self-attention over the flattened levels, then a feed-forward block (post-norm).

    Args:
        d_model: Channels.
        num_heads: Attention heads.
        num_levels: Feature levels.
        num_points: Sampling points per head and level.
        dim_feedforward: Hidden channels of the feed-forward block.
        dropout: Dropout rate.
    """

    def __init__(self, *, d_model: int, num_heads: int, num_levels: int, num_points: int, dim_feedforward: int,
                 dropout: float) -> None:
        super().__init__()
        self.self_attn = DeformAttention(d_model=d_model, n_levels=num_levels, n_heads=num_heads,
                                         n_points=num_points)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model)
        self.ffn = FeedForward(d_model=d_model, dim_feedforward=dim_feedforward, dropout=dropout)

    def forward(self, src: Tensor, pos: Tensor, reference_points: Tensor, spatial_shapes: Tensor,
                level_start_index: Tensor, padding_mask: Tensor) -> Tensor:
        """One layer.

        Args:
            src: [N, S, C] cells of all levels.
            pos: [N, S, C] their position + level embeddings.
            reference_points: [N, S, L, 2] each cell's centre as seen on every level.
            spatial_shapes: [L, 2] long (H_l, W_l).
            level_start_index: [L] long.
            padding_mask: [N, S] bool, True at padding.

        Returns:
            [N, S, C].
        """
        attended = self.self_attn(src + pos, reference_points, src, spatial_shapes, level_start_index,
                                  padding_mask)
        return self.ffn(self.norm(src + self.dropout(attended)))


def encoder_reference_points(sizes: Sequence[tuple[Tensor | int, Tensor | int]], valid_ratios: Tensor) -> Tensor:
    """Centre of every cell of every level, in [0, 1] of each level's padded map, as seen on all levels.

    Args:
        sizes: (H_l, W_l) per level: ints, or traced scalars when exporting (the sizes stay symbolic).
        valid_ratios: [N, L, 2] (w, h) valid fraction of each level's map.

    Returns:
        [N, S, L, 2] (x, y): a cell's centre, normalised by its own level's valid size, then scaled by every
        level's valid ratio (the same image point on every level).
    """
    points = []
    for lvl, (h, w) in enumerate(sizes):
        ys = torch.arange(h, dtype=torch.float32, device=valid_ratios.device) + 0.5
        xs = torch.arange(w, dtype=torch.float32, device=valid_ratios.device) + 0.5
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")  # [H, W]
        ref_y = grid_y.reshape(1, -1) / (valid_ratios[:, None, lvl, 1] * h)  # [N, H*W]
        ref_x = grid_x.reshape(1, -1) / (valid_ratios[:, None, lvl, 0] * w)
        points.append(torch.stack([ref_x, ref_y], dim=-1))  # [N, H*W, 2]
    ref = torch.cat(points, dim=1)  # [N, S, 2]
    return ref[:, :, None] * valid_ratios[:, None]  # [N, S, L, 2]


class DeformableEncoder(nn.Module):
    """``num_layers`` copies of an encoder layer over the flattened levels."""

    def __init__(self, *, layer: DeformableEncoderLayer, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))

    def forward(self, src: Tensor, pos: Tensor, sizes: Sequence[tuple[Tensor | int, Tensor | int]],
                spatial_shapes: Tensor, level_start_index: Tensor, valid_ratios: Tensor,
                padding_mask: Tensor) -> Tensor:
        """Encode ``src`` [N, S, C] (see :class:`DeformableEncoderLayer`; ``sizes`` as in
        :func:`encoder_reference_points`) -> memory [N, S, C]."""
        reference_points = encoder_reference_points(sizes, valid_ratios)
        for layer in self.layers:
            src = layer(src, pos, reference_points, spatial_shapes, level_start_index, padding_mask)
        return src
