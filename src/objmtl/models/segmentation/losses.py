"""Segmentation losses: pixel cross-entropy with an ignore index, an auxiliary term and an optional Dice term."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SegmentationLoss", "dice_loss"]


def _cross_entropy(logits: Tensor, target: Tensor, ignore_index: int) -> Tensor:
    """Mean over the labelled pixels; 0 (with a gradient) when every pixel is ignored, never NaN."""
    total = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="sum")
    return total / (target != ignore_index).sum().clamp(min=1)


def dice_loss(logits: Tensor, target: Tensor, *, ignore_index: int = 255, eps: float = 1.0) -> Tensor:
    """Soft multi-class Dice loss, ``1 - mean_c dice_c`` over the classes present in the target.

    Args:
        logits: Tensor[N, K, H, W].
        target: LongTensor[N, H, W] class ids; ``ignore_index`` pixels take no part.
        ignore_index: the id of unlabelled pixels.
        eps: smoothing added to numerator and denominator.

    Returns:
        A scalar; 0 when no pixel is labelled.
    """
    k = logits.shape[1]
    valid = target != ignore_index  # [N, H, W]
    probs = logits.float().softmax(1) * valid.unsqueeze(1)  # [N, K, H, W]
    onehot = F.one_hot(torch.where(valid, target, 0), k).permute(0, 3, 1, 2) * valid.unsqueeze(1)  # [N, K, H, W]
    inter = (probs * onehot).sum((0, 2, 3))
    denom = probs.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    present = onehot.sum((0, 2, 3)) > 0
    if not present.any():
        return logits.sum() * 0.0
    dice = (2 * inter + eps) / (denom + eps)
    return 1 - dice[present].mean()


class SegmentationLoss(nn.Module):
    """``loss = CE(out) + aux_weight * CE(aux) + dice_weight * Dice(out)``, as a dict of named terms.

    Args:
        ignore_index: mask id left out of every term.
        aux_weight: weight of the auxiliary head's cross-entropy (used when the model returns ``aux``).
        dice_weight: weight of :func:`dice_loss`; 0 turns it off.
    """

    def __init__(self, *, ignore_index: int = 255, aux_weight: float = 0.4, dice_weight: float = 0.0) -> None:
        super().__init__()
        self.ignore_index, self.aux_weight, self.dice_weight = ignore_index, aux_weight, dice_weight

    def forward(self, outputs: dict[str, Tensor], target: Tensor) -> dict[str, Tensor]:
        """outputs ``{"out": Tensor[N, K, H, W], "aux"?: ...}``, target LongTensor[N, H, W] ->
        ``{"loss", "loss_ce", "loss_aux"?, "loss_dice"?}``."""
        losses = {"loss_ce": _cross_entropy(outputs["out"], target, self.ignore_index)}
        if "aux" in outputs and self.aux_weight > 0:
            losses["loss_aux"] = self.aux_weight * _cross_entropy(outputs["aux"], target, self.ignore_index)
        if self.dice_weight > 0:
            losses["loss_dice"] = self.dice_weight * dice_loss(outputs["out"], target, ignore_index=self.ignore_index)
        losses["loss"] = sum(losses.values())  # type: ignore[assignment]
        return losses
