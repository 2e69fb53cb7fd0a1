"""Image regressor: backbone -> global pooling -> linear head with one output per target."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from objmtl.models.interfaces import TaskModel

__all__ = ["Regressor", "RegressorModel"]


@runtime_checkable
class RegressorModel(TaskModel, Protocol):
    """``forward(images [N, 3, H, W]) -> normalised targets [N, num_targets]``: ``(value - mean) / std`` per
    target, the mean and std of ``meta.json``; the task and the export map them back to source units."""

    num_targets: int


class Regressor(nn.Module):
    """A backbone and a linear head on its pooled last feature map, ``num_targets`` outputs.

    Args:
        backbone: returns a list of feature maps and declares ``out_channels``.
        num_targets: how many values an image has (``${meta:num_targets}``: the length of ``meta.json``'s
            ``targets``).
        dropout: dropout before the linear layer.
    """

    kind = "reg"

    def __init__(self, *, backbone: nn.Module, num_targets: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_targets = num_targets
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(backbone.out_channels[-1], num_targets)

    def forward(self, images: Tensor) -> Tensor:
        """images (Tensor[N, 3, H, W]) -> normalised predictions (Tensor[N, num_targets])."""
        feats = self.backbone(images)[-1]
        return self.fc(self.dropout(torch.flatten(self.pool(feats), 1)))
