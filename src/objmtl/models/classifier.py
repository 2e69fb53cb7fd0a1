"""Image classifier: backbone -> global pooling -> linear head."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["Classifier"]


class Classifier(nn.Module):
    """A backbone and a linear head on its last feature map.

    Args:
        backbone: returns a list of feature maps and declares ``out_channels``.
        num_classes: size of the output (taken from the shards' meta.json by the config).
        dropout: dropout before the linear layer.
    """

    kind = "cls"

    def __init__(self, *, backbone: nn.Module, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_classes = num_classes
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(backbone.out_channels[-1], num_classes)

    def forward(self, images: Tensor) -> Tensor:
        """images (Tensor[N, 3, H, W]) -> logits (Tensor[N, num_classes])."""
        feats = self.backbone(images)[-1]
        return self.fc(self.dropout(torch.flatten(self.pool(feats), 1)))
