"""The deformable decoder: object queries attend to each other, then to a few points of the encoder memory
around their reference points; optionally each layer refines the reference boxes (iterative refinement)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import Tensor, nn

from objmtl.models.detection.deformable_detr.encoder import FeedForward
from objmtl.models.detection.deformable_detr.layers import inverse_sigmoid
from objmtl.ops import DeformAttention

__all__ = ["DeformableDecoder", "DeformableDecoderLayer", "refine_boxes"]


class DeformableDecoderLayer(nn.Module):
    """Query self-attention, deformable cross-attention to the memory, feed-forward (each post-norm).

    Args:
        d_model: Channels.
        num_heads: Attention heads (self and cross).
        num_levels: Feature levels of the memory.
        num_points: Sampling points per head and level.
        dim_feedforward: Hidden channels of the feed-forward block.
        dropout: Dropout rate.
    """

    def __init__(self, *, d_model: int, num_heads: int, num_levels: int, num_points: int, dim_feedforward: int,
                 dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, num_heads, dropout=dropout, batch_first=True)
        self.dropout1, self.norm1 = nn.Dropout(dropout), nn.LayerNorm(d_model)
        self.cross_attn = DeformAttention(d_model=d_model, n_levels=num_levels, n_heads=num_heads,
                                          n_points=num_points)
        self.dropout2, self.norm2 = nn.Dropout(dropout), nn.LayerNorm(d_model)
        self.ffn = FeedForward(d_model=d_model, dim_feedforward=dim_feedforward, dropout=dropout)

    def forward(self, tgt: Tensor, query_pos: Tensor, reference_points: Tensor, memory: Tensor,
                spatial_shapes: Tensor, level_start_index: Tensor, padding_mask: Tensor) -> Tensor:
        """One layer.

        Args:
            tgt: [N, Q, C] query contents.
            query_pos: [N, Q, C] query positions.
            reference_points: [N, Q, L, 2 | 4] per level: points (x, y) or boxes (cx, cy, w, h) in [0, 1].
            memory: [N, S, C] encoder output.
            spatial_shapes: [L, 2] long.
            level_start_index: [L] long.
            padding_mask: [N, S] bool, True at padding.

        Returns:
            [N, Q, C].
        """
        q = tgt + query_pos
        attended = self.self_attn(q, q, tgt, need_weights=False)[0]
        tgt = self.norm1(tgt + self.dropout1(attended))
        attended = self.cross_attn(tgt + query_pos, reference_points, memory, spatial_shapes, level_start_index,
                                   padding_mask)
        return self.ffn(self.norm2(tgt + self.dropout2(attended)))


def refine_boxes(delta: Tensor, reference: Tensor) -> Tensor:
    """Boxes [..., 4] in [0, 1]: ``delta`` [..., 4] added to ``reference`` [..., 2 | 4] in logit space (a point
    reference moves only the centre; the size comes from ``delta`` alone)."""
    if reference.shape[-1] == 4:
        return (delta + inverse_sigmoid(reference)).sigmoid()
    return torch.cat([delta[..., :2] + inverse_sigmoid(reference), delta[..., 2:]], dim=-1).sigmoid()


class DeformableDecoder(nn.Module):
    """``num_layers`` copies of a decoder layer; returns every layer's output and reference."""

    def __init__(self, *, layer: DeformableDecoderLayer, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))

    def forward(self, tgt: Tensor, query_pos: Tensor, reference: Tensor, memory: Tensor, spatial_shapes: Tensor,
                level_start_index: Tensor, valid_ratios: Tensor, padding_mask: Tensor,
                box_heads: list[Callable[[Tensor], Tensor]] | None = None) -> tuple[Tensor, list[Tensor]]:
        """Decode.

        Args:
            tgt: [N, Q, C] initial query contents.
            query_pos: [N, Q, C] query positions.
            reference: [N, Q, 2 | 4] initial reference points or boxes in [0, 1] of the valid image.
            memory, spatial_shapes, level_start_index, padding_mask: see :class:`DeformableDecoderLayer`.
            valid_ratios: [N, L, 2] (w, h) valid fraction of each level's map.
            box_heads: With iterative refinement, one head per layer: ``[N, Q, C] -> [N, Q, 4]`` deltas that
                move the reference for the next layer (detached, as in the paper); None keeps it fixed.

        Returns:
            ``hs`` [D, N, Q, C] each layer's output, and ``references``: D tensors [N, Q, 2 | 4], the reference
            each layer's boxes are predicted relative to (layer 0's is ``reference``; with refinement from a
            point reference, later ones are boxes).
        """
        outputs, references = [], []
        for lid, layer in enumerate(self.layers):
            references.append(reference)
            ratios = valid_ratios if reference.shape[-1] == 2 else torch.cat([valid_ratios, valid_ratios], -1)
            per_level = reference[:, :, None] * ratios[:, None]  # [N, Q, L, 2 | 4]
            tgt = layer(tgt, query_pos, per_level, memory, spatial_shapes, level_start_index, padding_mask)
            outputs.append(tgt)
            if box_heads is not None:
                reference = refine_boxes(box_heads[lid](tgt), reference).detach()
        return torch.stack(outputs), references
