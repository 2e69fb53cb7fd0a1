"""Small layers of Deformable DETR: the box MLP, a padding-aware GroupNorm and ``inverse_sigmoid``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MLP", "MaskedGroupNorm", "inverse_sigmoid"]


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    """``log(x / (1 - x))`` with ``x`` clamped to [0, 1] and both terms to at least ``eps``."""
    x = x.clamp(min=0.0, max=1.0)
    return torch.log(x.clamp(min=eps) / (1.0 - x).clamp(min=eps))


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them (the box head: d -> d -> d -> 4).

    Args:
        in_dim: Input channels.
        hidden_dim: Channels of the hidden layers.
        out_dim: Output channels.
        num_layers: Linear layers, >= 1.
    """

    def __init__(self, *, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))

    def forward(self, x: Tensor) -> Tensor:
        """[..., in_dim] -> [..., out_dim]."""
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


class MaskedGroupNorm(nn.GroupNorm):
    """GroupNorm whose statistics skip padded positions, so that padding does not change valid features.

    Without ``mask`` it is :class:`torch.nn.GroupNorm`. The input projections of Deformable DETR normalise
    feature maps of padded batches; with plain GroupNorm, how much padding an image gets in its batch would
    change its normalised features (and its detections).
    """

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:  # type: ignore[override]
        """Normalise ``x`` [N, C, H, W]; ``mask`` [N, H, W] bool is True at padding."""
        if mask is None:
            return super().forward(x)
        n, c, h, w = x.shape
        g = x.reshape(n, self.num_groups, c // self.num_groups, h, w)  # [N, G, C/G, H, W]
        keep = (~mask).to(x.dtype)[:, None, None]  # [N, 1, 1, H, W]
        count = (keep.sum((3, 4)) * (c // self.num_groups)).clamp(min=1.0)  # [N, 1, 1]
        mean = (g * keep).sum((2, 3, 4), keepdim=True) / count[..., None, None]  # [N, G, 1, 1, 1]
        var = ((g - mean).pow(2) * keep).sum((2, 3, 4), keepdim=True) / count[..., None, None]
        out = ((g - mean) / torch.sqrt(var + self.eps)).reshape(n, c, h, w)
        if self.affine:
            out = out * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return out
