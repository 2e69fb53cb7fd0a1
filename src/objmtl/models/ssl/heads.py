"""The MLPs of MoBY: projector and predictor."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["MLPHead"]


class MLPHead(nn.Module):
    """Linear -> BatchNorm -> ReLU -> Linear (MoBY's two-layer projector and predictor).

    Args:
        in_dim: input features.
        hidden_dim: width of the hidden layer.
        out_dim: output features.
    """

    def __init__(self, *, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True),
                                 nn.Linear(hidden_dim, out_dim))

    def forward(self, x: Tensor) -> Tensor:
        """x (Tensor[N, in_dim]) -> Tensor[N, out_dim]."""
        return self.net(x)
