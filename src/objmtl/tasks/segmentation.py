"""Semantic segmentation: pixel cross-entropy (+ aux, + Dice) in training; mIoU at the original image sizes."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from objmtl.data.schema import IGNORE_INDEX
from objmtl.errors import UserError
from objmtl.metrics.segmentation import SEG_KEYS, SegmentationMetrics
from objmtl.models.segmentation.inference import slide_inference
from objmtl.models.segmentation.losses import SegmentationLoss
from objmtl.tasks.base import BaseTask, OptimizerFactory, SchedulerFactory

__all__ = ["SegmentationTask"]

log = logging.getLogger(__name__)


class SegmentationTask(BaseTask):
    """Trains a :class:`~objmtl.models.segmentation.SegmentationModel` on padded batches of
    :class:`~objmtl.data.seg_samples.SegmentationSamples`.

    Batches are ``{"images": [N, 3, Hp, Wp], "masks": [N, Hp, Wp], "image_sizes": [N, 2], "orig_masks": [...],
    ...}``. Logs ``train/loss`` and its terms (``train/loss_ce``, ``train/loss_aux``, ``train/loss_dice``),
    ``val/loss``, ``val/miou``, ``val/pixel_acc``, ``val/macc`` (see :mod:`objmtl.metrics.segmentation`:
    classes absent from both ground truth and prediction are left out of the mean) and the same under
    ``test/``. Evaluation is at each image's original size: the logits of its valid (unpadded) region are
    bilinearly upsampled to the original mask's size before the argmax.

    A mask value that is neither a class nor 255 is made 255 (ignored) and counted: ``data/unknown_mask_pixels``
    per epoch, and one warning naming the first sample and value. At the end of each evaluation (rank zero, not
    in the sanity check) it writes ``per_class_iou_{val,test}.json`` in the run directory and keeps the rows
    in ``per_class[stage]``. ``validation_step`` / ``test_step`` return ``{"preds": [uint8 Tensor[h, w]],
    "keys", "image_ids"}`` (original sizes) for callbacks (``objmtl.runs.seg_outputs``).

    Args:
        model: the segmentation model (``forward`` -> ``{"out", "aux"?}`` at the input size, ``num_classes``).
        class_names: names of the mask classes (checked against ``num_classes``); optional.
        aux_weight: weight of the auxiliary head's loss (when the model has one: ``model.aux_head=true``).
        dice_weight: weight of a soft Dice term; 0 = off.
        inference: ``whole`` (the padded image at once) or ``slide`` (windows of ``window`` px every
            ``window_stride`` px, logits averaged where they overlap).
        window: sliding-window size (one side, or [h, w]) in input pixels.
        window_stride: step between windows; None: two thirds of the window.
        optimizer, scheduler, run_config: see :class:`~objmtl.tasks.base.BaseTask`.
    """

    main_metric = "miou"

    def __init__(self, *, model: nn.Module, class_names: Sequence[str] | None = None, aux_weight: float = 0.4,
                 dice_weight: float = 0.0, inference: str = "whole", window: int | Sequence[int] = 512,
                 window_stride: int | Sequence[int] | None = None, optimizer: OptimizerFactory | None = None,
                 scheduler: SchedulerFactory | None = None, run_config: dict[str, Any] | None = None,
                 nonfinite_loss: str = "stop") -> None:
        super().__init__(model=model, optimizer=optimizer, scheduler=scheduler, run_config=run_config,
                         nonfinite_loss=nonfinite_loss)
        self.num_classes = int(model.num_classes)
        self.class_names = list(class_names) if class_names else None
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise UserError(f"task.module.class_names: {len(self.class_names)} names for model.num_classes="
                            f"{self.num_classes}")
        if inference not in ("whole", "slide"):
            raise UserError(f"task.module.inference={inference}: use whole or slide")
        self.inference, self.window, self.window_stride = inference, window, window_stride
        self.criterion = SegmentationLoss(ignore_index=IGNORE_INDEX, aux_weight=aux_weight, dice_weight=dice_weight)
        self.val_metrics = SegmentationMetrics(num_classes=self.num_classes)
        self.test_metrics = SegmentationMetrics(num_classes=self.num_classes)
        self.per_class: dict[str, list[dict[str, Any]]] = {}
        self._warned_unknown = False

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        return self.model(images)

    def logits(self, images: Tensor) -> Tensor:
        """Tensor[N, K, H, W] logits at the input size, whole-image or by sliding window."""
        if self.inference == "slide":
            return slide_inference(lambda x: self.model(x)["out"], images, window=self.window,
                                   stride=self.window_stride)
        return self.model(images)["out"]

    def _clean(self, masks: Tensor, keys: Sequence[str] | None = None) -> tuple[Tensor, int]:
        """Mask ids that are neither a class nor ignore -> ignore; returns the mask and how many pixels changed."""
        unknown = ((masks >= self.num_classes) & (masks != IGNORE_INDEX)) | (masks < 0)
        n = int(unknown.sum())
        if n and not self._warned_unknown:
            self._warned_unknown = True
            i = int(unknown.flatten(1).any(1).nonzero()[0]) if masks.dim() == 3 else 0
            value = int(masks[i][unknown[i]][0]) if masks.dim() == 3 else int(masks[unknown][0])
            where = f"sample {keys[i]}" if keys else "a sample"
            log.warning("%s: mask value %d has no class (%d mask classes: 0..%d); such pixels are ignored and "
                        "counted in data/unknown_mask_pixels", where, value, self.num_classes, self.num_classes - 1)
        return (masks.masked_fill(unknown, IGNORE_INDEX) if n else masks), n

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        return self.checked_loss(self.training_losses(batch))

    def training_losses(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """The batch's loss terms (``loss`` is their total), logged under ``train/`` (and ``data/``)."""
        masks, unknown = self._clean(batch["masks"], batch.get("keys"))
        losses = self.criterion(self(batch["images"]), masks)
        n = len(batch["images"])
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=n)
        self.log_dict({f"train/{k}": v.detach() for k, v in losses.items() if k != "loss"}, batch_size=n)
        self.log("data/unknown_mask_pixels", float(unknown), on_step=False, on_epoch=True, reduce_fx="sum",
                 batch_size=n)
        self.log("data/unlabeled_images", float(batch.get("unlabeled", 0)), on_step=False, on_epoch=True,
                 reduce_fx="sum", batch_size=n)
        return losses

    def _original_size(self, logits: Tensor, batch: dict[str, Any]) -> list[Tensor]:
        """Per image: class ids (uint8 Tensor[h, w]) at the original size, from the valid region's logits."""
        preds = []
        for i, ((vh, vw), (oh, ow)) in enumerate(zip(batch["image_sizes"].tolist(), batch["orig_sizes"],
                                                     strict=True)):
            x = logits[i:i + 1, :, :vh, :vw]  # [1, K, vh, vw]
            if (vh, vw) != (oh, ow):
                x = F.interpolate(x, size=(int(oh), int(ow)), mode="bilinear", align_corners=False)
            preds.append(x.argmax(1)[0].to(torch.uint8 if self.num_classes < 256 else torch.int16))
        return preds

    def _eval_step(self, batch: dict[str, Any], stage: str, dataloader_idx: int = 0) -> dict[str, Any]:
        logits = self.logits(batch["images"])
        masks, _ = self._clean(batch["masks"], batch.get("keys"))
        loss = self.criterion({"out": logits}, masks)["loss"]
        self.log_eval_loss(stage, loss, batch_size=len(masks))
        metric = self.val_metrics if stage == "val" else self.test_metrics
        preds = self._original_size(logits, batch)
        for pred, target, key in zip(preds, batch["orig_masks"], batch["keys"], strict=True):
            target, _ = self._clean(target.to(pred.device).long(), [key])
            metric.update(pred.long(), target)
        return {"preds": preds, "keys": list(batch["keys"]), "image_ids": list(batch["image_ids"])}

    def _eval_end(self, stage: str) -> None:
        metric = self.val_metrics if stage == "val" else self.test_metrics
        result = metric.compute()
        self.log_dict({f"{stage}/{k}": float(result[k]) for k in SEG_KEYS}, prog_bar=stage == "val")
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            rows = SegmentationMetrics.per_class_table(result, class_names=self.class_names or [])
            self.per_class[stage] = rows
            out = self.plot_dir.parent / f"per_class_iou_{stage}.json"
            out.write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        metric.reset()

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[Tensor]:
        """Class ids per image at its original size (uint8 Tensor[h, w])."""
        return self._original_size(self.logits(batch["images"]), batch)
