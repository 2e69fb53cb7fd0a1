"""Collectives that work the same in one process and under DDP."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["all_gather_rows"]


def all_gather_rows(x: Tensor) -> Tensor:
    """``x`` (Tensor[N, ...]) of every rank, concatenated in rank order; ``x`` itself outside DDP.

    N may differ between ranks (and be 0): each rank's rows are padded to the largest N for
    ``all_gather``, then trimmed. A collective: every rank must call it.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    x = x.contiguous()
    sizes = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor([len(x)], device=x.device))
    counts = [int(n.item()) for n in sizes]
    longest = max(counts)
    if longest == 0:
        return x
    padded = torch.cat([x, x.new_zeros((longest - len(x), *x.shape[1:]))])
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([part[:n] for part, n in zip(parts, counts, strict=True)])
