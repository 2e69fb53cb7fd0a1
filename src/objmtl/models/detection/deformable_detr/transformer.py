"""Deformable DETR's transformer: multi-level features in, decoded queries and their reference boxes out.

Levels are flattened and concatenated with a learned level embedding added to their position embeddings;
padding masks follow every level, and each level's valid ratio (the unpadded fraction of its map) maps
points between the valid image and the padded maps. Queries are learned (query embedding -> content,
position and reference point) or, with ``two_stage``, the top-scoring encoder proposals.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.onnx.operators import shape_as_tensor

from objmtl.models.detection.deformable_detr.decoder import DeformableDecoder, DeformableDecoderLayer
from objmtl.models.detection.deformable_detr.encoder import DeformableEncoder, DeformableEncoderLayer
from objmtl.models.detection.deformable_detr.position_encoding import sine_embed_boxes
from objmtl.models.detection.deformable_detr.proposals import encoder_proposals
from objmtl.ops import MSDeformAttn

__all__ = ["DeformableTransformer", "TransformerOutput"]

Head = Callable[[Tensor], Tensor]


class TransformerOutput(NamedTuple):
    """What the transformer returns (D decoder layers, S encoder cells)."""

    hs: Tensor  # [D, N, Q, C] every decoder layer's output
    references: list[Tensor]  # D x [N, Q, 2 | 4] the reference each layer's boxes are relative to
    enc_logits: Tensor | None  # two-stage: [N, S, K] class logits of the encoder proposals
    enc_boxes: Tensor | None  # two-stage: [N, S, 4] (cx, cy, w, h) in [0, 1] of the encoder proposals


def _valid_ratio(mask: Tensor) -> Tensor:
    """[N, H, W] padding mask -> [N, 2] (w, h) valid fraction of the map."""
    valid_h = (~mask[:, :, 0]).sum(1).to(torch.float32)
    valid_w = (~mask[:, 0, :]).sum(1).to(torch.float32)
    return torch.stack([valid_w / mask.shape[2], valid_h / mask.shape[1]], -1)


class DeformableTransformer(nn.Module):
    """Deformable encoder and decoder with their query set-up.

    Args:
        d_model: Channels.
        num_heads: Attention heads.
        num_encoder_layers: Encoder layers.
        num_decoder_layers: Decoder layers.
        dim_feedforward: Hidden channels of the feed-forward blocks.
        dropout: Dropout rate.
        num_levels: Feature levels.
        enc_points: Sampling points per head and level in the encoder.
        dec_points: Sampling points per head and level in the decoder.
        num_queries: Object queries (two-stage: proposals kept).
        two_stage: Queries from the encoder's top proposals instead of learned embeddings.
    """

    def __init__(self, *, d_model: int = 256, num_heads: int = 8, num_encoder_layers: int = 6,
                 num_decoder_layers: int = 6, dim_feedforward: int = 1024, dropout: float = 0.1, num_levels: int = 4,
                 enc_points: int = 4, dec_points: int = 4, num_queries: int = 300, two_stage: bool = False) -> None:
        super().__init__()
        self.d_model, self.num_queries, self.two_stage = d_model, num_queries, two_stage
        enc_layer = DeformableEncoderLayer(d_model=d_model, num_heads=num_heads, num_levels=num_levels,
                                           num_points=enc_points, dim_feedforward=dim_feedforward, dropout=dropout)
        self.encoder = DeformableEncoder(layer=enc_layer, num_layers=num_encoder_layers)
        dec_layer = DeformableDecoderLayer(d_model=d_model, num_heads=num_heads, num_levels=num_levels,
                                           num_points=dec_points, dim_feedforward=dim_feedforward, dropout=dropout)
        self.decoder = DeformableDecoder(layer=dec_layer, num_layers=num_decoder_layers)
        self.level_embed = nn.Parameter(torch.empty(num_levels, d_model))
        if two_stage:
            self.enc_output = nn.Linear(d_model, d_model)
            self.enc_output_norm = nn.LayerNorm(d_model)
            self.pos_trans = nn.Linear(2 * d_model, 2 * d_model)
            self.pos_trans_norm = nn.LayerNorm(2 * d_model)
        else:
            self.query_embed = nn.Embedding(num_queries, 2 * d_model)  # query position and content
            self.reference_points = nn.Linear(d_model, 2)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m.reset_parameters()
        if not self.two_stage:  # N(0, 1) queries: their reference points spread over the image
            nn.init.normal_(self.query_embed.weight)
            nn.init.zeros_(self.reference_points.bias)
        nn.init.normal_(self.level_embed)

    def _flatten(self, srcs: Sequence[Tensor], masks: Sequence[Tensor], pos_embeds: Sequence[Tensor]
                 ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Levels -> (src [N, S, C], pos [N, S, C], padding [N, S], spatial_shapes [L, 2], level_start [L],
        valid_ratios [N, L, 2])."""
        src = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)  # [N, S, C]
        pos = torch.cat([p.flatten(2).transpose(1, 2) + self.level_embed[lvl][None, None]
                         for lvl, p in enumerate(pos_embeds)], 1)
        padding = torch.cat([m.flatten(1) for m in masks], 1)  # [N, S]
        # from the maps' shapes (a Shape node when traced: the sizes follow the input)
        spatial_shapes = torch.stack([shape_as_tensor(s)[-2:] for s in srcs]).to(src.device)  # [L, 2]
        areas = spatial_shapes[:, 0] * spatial_shapes[:, 1]
        level_start = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])  # [L]
        valid_ratios = torch.stack([_valid_ratio(m) for m in masks], 1)  # [N, L, 2]
        return src, pos, padding, spatial_shapes, level_start, valid_ratios

    def _proposal_queries(self, memory: Tensor, masks: Sequence[Tensor], class_head: Head, box_head: Head
                          ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Two-stage: (tgt, query_pos [N, Q, C], reference [N, Q, 4], enc_logits [N, S, K], enc_boxes [N, S, 4])."""
        masked, proposals, valid = encoder_proposals(memory, masks)
        out = self.enc_output_norm(self.enc_output(masked))  # [N, S, C]
        enc_logits = class_head(out)  # [N, S, K]
        enc_coords = box_head(out) + proposals  # [N, S, 4] logits (inf where invalid)
        if int(enc_logits.shape[1]) < self.num_queries:
            raise ValueError(f"two-stage: {enc_logits.shape[1]} encoder cells for {self.num_queries} queries; "
                             "use a larger input or fewer queries")
        score = enc_logits.detach().amax(-1).masked_fill(~valid, float("-inf"))  # [N, S]
        top = score.topk(self.num_queries, dim=1).indices  # [N, Q]
        coords = torch.gather(enc_coords.detach(), 1, top[..., None].expand(-1, -1, 4))  # [N, Q, 4]
        reference = coords.sigmoid()
        embed = self.pos_trans_norm(self.pos_trans(sine_embed_boxes(reference, num_pos_feats=self.d_model // 2)))
        query_pos, tgt = embed.split(self.d_model, dim=-1)
        return tgt, query_pos, reference, enc_logits, enc_coords.sigmoid()

    def forward(self, srcs: Sequence[Tensor], masks: Sequence[Tensor], pos_embeds: Sequence[Tensor], *,
                box_heads: list[Head] | None = None, proposal_heads: tuple[Head, Head] | None = None
                ) -> TransformerOutput:
        """Encode the levels and decode the queries.

        Args:
            srcs: Per level [N, C, H_l, W_l] projected features.
            masks: Per level [N, H_l, W_l] bool, True at padding.
            pos_embeds: Per level [N, C, H_l, W_l] position embeddings.
            box_heads: Iterative refinement: one box head per decoder layer (see :class:`DeformableDecoder`).
            proposal_heads: Two-stage: the (class, box) heads scoring the encoder's proposals.

        Returns:
            :class:`TransformerOutput`.
        """
        src, pos, padding, spatial_shapes, level_start, valid_ratios = self._flatten(srcs, masks, pos_embeds)
        sizes = [(s.shape[-2], s.shape[-1]) for s in srcs]  # ints, or traced scalars when exporting
        memory = self.encoder(src, pos, sizes, spatial_shapes, level_start, valid_ratios, padding)
        n = memory.shape[0]
        enc_logits = enc_boxes = None
        if self.two_stage:
            if proposal_heads is None:
                raise ValueError("two_stage needs proposal_heads (class head, box head)")
            tgt, query_pos, reference, enc_logits, enc_boxes = self._proposal_queries(memory, masks, *proposal_heads)
        else:
            query_pos, tgt = self.query_embed.weight.split(self.d_model, dim=1)  # [Q, C] each
            query_pos, tgt = query_pos[None].expand(n, -1, -1), tgt[None].expand(n, -1, -1)
            reference = self.reference_points(query_pos).sigmoid()  # [N, Q, 2]
        hs, references = self.decoder(tgt, query_pos, reference, memory, spatial_shapes, level_start, valid_ratios,
                                      padding, box_heads=box_heads)
        return TransformerOutput(hs, references, enc_logits, enc_boxes)
