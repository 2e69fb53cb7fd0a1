"""Sine position embeddings of feature maps, normalised to each image's unpadded extent (DETR's)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["SinePositionEmbedding", "sine_embed_boxes"]


class SinePositionEmbedding(nn.Module):
    """Sines and cosines of the (y, x) position of every cell, as fractions of the image's valid size.

    Positions are cell centres counted over valid (unpadded) cells only, so a cell gets the same embedding
    however much padding its batch adds.

    Args:
        num_pos_feats: Channels per axis; the embedding has ``2 * num_pos_feats`` (= d_model).
        temperature: Base of the frequencies.
        scale: Range the normalised positions are stretched to.
    """

    def __init__(self, *, num_pos_feats: int = 128, temperature: float = 10000.0,
                 scale: float = 2 * math.pi) -> None:
        super().__init__()
        self.num_pos_feats, self.temperature, self.scale = num_pos_feats, temperature, scale

    def forward(self, mask: Tensor) -> Tensor:
        """Embed the cells of ``mask`` [N, H, W] (True at padding) -> [N, 2 * num_pos_feats, H, W] (y first)."""
        not_mask = (~mask).to(torch.float32)
        y = not_mask.cumsum(1)  # [N, H, W] 1..h in valid rows
        x = not_mask.cumsum(2)
        eps = 1e-6
        y = (y - 0.5) / (y[:, -1:, :] + eps) * self.scale
        x = (x - 0.5) / (x[:, :, -1:] + eps) * self.scale
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=mask.device)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / self.num_pos_feats)
        pos_x, pos_y = x[..., None] / dim_t, y[..., None] / dim_t  # [N, H, W, F]
        pos_x = torch.stack([pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()], dim=4).flatten(3)
        pos_y = torch.stack([pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()], dim=4).flatten(3)
        return torch.cat([pos_y, pos_x], dim=3).permute(0, 3, 1, 2)  # [N, 2F, H, W]


def sine_embed_boxes(boxes: Tensor, *, num_pos_feats: int, temperature: float = 10000.0,
                     scale: float = 2 * math.pi) -> Tensor:
    """Sine embedding of each of the 4 coordinates of ``boxes`` [N, Q, 4] in [0, 1] -> [N, Q, 4 * F]."""
    dim_t = torch.arange(num_pos_feats, dtype=torch.float32, device=boxes.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_pos_feats)
    pos = boxes[..., None] * scale / dim_t  # [N, Q, 4, F]
    return torch.stack([pos[..., 0::2].sin(), pos[..., 1::2].cos()], dim=4).flatten(2)
