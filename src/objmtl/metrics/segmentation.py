"""Semantic segmentation metrics from one pixel confusion matrix: mIoU, pixel accuracy, per-class IoU.

The confusion matrix is torchmetrics' :class:`~torchmetrics.classification.MulticlassConfusionMatrix`
(``ignore_index`` pixels left out, summed over DDP ranks). From it, per class ``c``:
``IoU_c = TP / (TP + FP + FN)`` and ``acc_c = TP / (TP + FN)``.

- ``miou``: the mean IoU over the classes **present in the ground truth or in the prediction**
  (``TP + FP + FN > 0``). A class absent from both has no IoU (0 / 0) and is **excluded** from the
  mean, as torchmetrics' ``MulticlassJaccardIndex(average="macro")`` and mmseg's nan-mean do; a class
  predicted but absent from the ground truth has IoU 0 and counts.
- ``macc``: the mean of ``acc_c`` over the classes present in the ground truth.
- ``pixel_acc``: correct labelled pixels / labelled pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix

__all__ = ["SEG_KEYS", "SegmentationMetrics"]

SEG_KEYS = ("miou", "pixel_acc", "macc")


class SegmentationMetrics(MulticlassConfusionMatrix):
    """Accumulates ``update(preds, target)`` (class ids of the same shape; ``ignore_index`` in the target is
    left out); ``compute()`` gives the scores of the module docstring and the per-class rows.

    Args:
        num_classes: mask classes.
        ignore_index: the target id left out (255).
    """

    def __init__(self, *, num_classes: int, ignore_index: int = 255) -> None:
        # validation is off: the task maps ids >= num_classes to ignore_index before update
        super().__init__(num_classes=num_classes, ignore_index=ignore_index, validate_args=False)

    def compute(self) -> dict[str, Any]:  # type: ignore[override]
        """``{"miou", "pixel_acc", "macc"}`` (scalar tensors; NaN with no labelled pixel) and per class
        ``iou``, ``acc`` (NaN where undefined), ``gt_pixels``, ``pred_pixels`` (Tensor[K])."""
        confmat = super().compute().double()  # [K (target), K (pred)]
        tp = confmat.diag()
        gt, pred = confmat.sum(1), confmat.sum(0)
        union = gt + pred - tp
        nan = torch.tensor(float("nan"), dtype=torch.float64, device=confmat.device)
        iou = torch.where(union > 0, tp / union.clamp(min=1), nan)
        acc = torch.where(gt > 0, tp / gt.clamp(min=1), nan)
        total = gt.sum()
        return {"miou": iou.nanmean().float() if (union > 0).any() else nan.float(),
                "macc": acc.nanmean().float() if (gt > 0).any() else nan.float(),
                "pixel_acc": (tp.sum() / total).float() if total > 0 else nan.float(),
                "iou": iou.float(), "acc": acc.float(), "gt_pixels": gt.long(), "pred_pixels": pred.long()}

    @staticmethod
    def per_class_table(result: dict[str, Any], *, class_names: Sequence[str] = ()) -> list[dict[str, Any]]:
        """One row per class of a :meth:`compute` result: ``class_id``, ``class``, ``iou`` and ``acc`` (None where
        undefined: a class absent from ground truth and prediction has no IoU), ``gt_pixels``, ``pred_pixels``."""
        rows = []

        def num(v: Tensor) -> float | None:
            return None if torch.isnan(v) else round(float(v), 6)

        for c in range(len(result["iou"])):
            rows.append({"class_id": c, "class": class_names[c] if c < len(class_names) else str(c),
                         "iou": num(result["iou"][c]), "acc": num(result["acc"][c]),
                         "gt_pixels": int(result["gt_pixels"][c]), "pred_pixels": int(result["pred_pixels"][c])})
        return rows
