"""Two-stage Deformable DETR: every encoder cell proposes a box; the best-scoring ones become the queries."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["encoder_proposals"]


def encoder_proposals(memory: Tensor, masks: Sequence[Tensor], *, base_size: float = 0.05,
                      margin: float = 0.01) -> tuple[Tensor, Tensor, Tensor]:
    """A square proposal centred on every valid cell, sized ``base_size * 2**level`` of the valid image.

    Args:
        memory: [N, S, C] encoder output, levels concatenated in the order of ``masks``.
        masks: Per level [N, H_l, W_l] bool, True at padding.
        base_size: Side of the first level's proposals, as a fraction of the image.
        margin: Proposals with a coordinate outside (margin, 1 - margin) are invalid.

    Returns:
        ``memory`` [N, S, C] with padded and invalid cells zeroed, the proposals [N, S, 4] (cx, cy, w, h) in
        logit space (inf where invalid) and ``valid`` [N, S] bool.
    """
    n = memory.shape[0]
    proposals = []
    for lvl, mask in enumerate(masks):
        h, w = mask.shape[-2], mask.shape[-1]
        valid_h = (~mask[:, :, 0]).sum(1).to(memory.dtype)  # [N]
        valid_w = (~mask[:, 0, :]).sum(1).to(memory.dtype)
        ys = torch.arange(h, dtype=memory.dtype, device=memory.device) + 0.5
        xs = torch.arange(w, dtype=memory.dtype, device=memory.device) + 0.5
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")  # [H, W]
        centres = torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], -1)[None]  # [1, H*W, 2]
        centres = centres / torch.stack([valid_w, valid_h], -1)[:, None, :].clamp(min=1.0)  # [N, H*W, 2]
        sizes = torch.full_like(centres, base_size * 2.0**lvl)
        proposals.append(torch.cat([centres, sizes], -1))  # [N, H*W, 4]
    boxes = torch.cat(proposals, 1).reshape(n, -1, 4)  # [N, S, 4]
    padding = torch.cat([m.flatten(1) for m in masks], 1)  # [N, S]
    valid = ((boxes > margin) & (boxes < 1 - margin)).all(-1) & ~padding  # [N, S]
    logits = torch.log(boxes / (1 - boxes)).masked_fill(~valid[..., None], float("inf"))
    return memory.masked_fill(~valid[..., None], 0.0), logits, valid
