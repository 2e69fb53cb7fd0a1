"""Object detection: a dense detector's losses in training, COCO mAP on the original image sizes."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics.detection import MeanAveragePrecision

from objmtl.tasks.base import BaseTask, OptimizerFactory, SchedulerFactory

__all__ = ["DetectionTask"]

_LOGGED = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_100")


def _inverse_scale(target: dict[str, Any], device: torch.device) -> Tensor:
    """[4] factors (1/sx, 1/sy, 1/sx, 1/sy) taking input-pixel xyxy boxes back to the original image."""
    sy, sx = (float(s) for s in target["scale"])
    return torch.tensor([1 / sx, 1 / sy, 1 / sx, 1 / sy], device=device)


class DetectionTask(BaseTask):
    """Trains a :class:`~objmtl.models.detection.DenseDetector` on padded batches of
    :class:`~objmtl.data.det_samples.DetectionSamples`.

    Batches are ``{"images": [N, 3, Hp, Wp], "image_sizes": [N, 2], "targets": [...]}``. Logs ``train/loss``
    and each loss term (``train/loss_cls``, ...); ``val/loss`` and COCO box metrics ``val/map``,
    ``val/map_50``, ``val/map_75``, ``val/map_{small,medium,large}``, ``val/mar_100``, and the same under
    ``test/``. Predicted and ground-truth boxes are mapped back to each image's original size with its
    ``scale`` (sy, sx) before evaluation, so the areas of COCO's size ranges are those of the source image.

    Args:
        model: The detector: ``forward``, ``loss`` and ``postprocess``, ``num_classes``.
        class_names: Names of the model's classes (checked against ``num_classes``); optional.
        optimizer: See :class:`~objmtl.tasks.base.BaseTask`.
        scheduler: See :class:`~objmtl.tasks.base.BaseTask`.
        run_config: See :class:`~objmtl.tasks.base.BaseTask`.
    """

    def __init__(self, *, model: nn.Module, class_names: list[str] | None = None,
                 optimizer: OptimizerFactory | None = None, scheduler: SchedulerFactory | None = None,
                 run_config: dict[str, Any] | None = None) -> None:
        super().__init__(model=model, optimizer=optimizer, scheduler=scheduler, run_config=run_config)
        self.class_names = list(class_names) if class_names is not None else None
        if self.class_names is not None and getattr(model, "num_classes", len(self.class_names)) != len(
                self.class_names):
            raise ValueError(f"model has {model.num_classes} classes for {len(self.class_names)} class names")
        coco_log = logging.getLogger("faster_coco_eval")
        if coco_log.level == logging.NOTSET:  # its 12-line summary at every evaluation: the metrics say it
            coco_log.setLevel(logging.WARNING)
        self.val_map = MeanAveragePrecision(backend="faster_coco_eval", iou_type="bbox")
        self.test_map = MeanAveragePrecision(backend="faster_coco_eval", iou_type="bbox")

    def forward(self, images: Tensor) -> dict[str, list[Tensor]]:
        return self.model(images)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        outputs = self(batch["images"])
        losses = self.model.loss(outputs, batch["targets"])
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=len(batch["targets"]))
        self.log_dict({f"train/{k}": v.detach() for k, v in losses.items() if k != "loss"},
                      batch_size=len(batch["targets"]))
        return losses["loss"]

    def _original_size(self, batch: dict[str, Any], preds: list[dict[str, Tensor]]
                       ) -> tuple[list[dict[str, Tensor]], list[dict[str, Tensor]]]:
        """Predictions and targets with boxes (and target areas) in original-image pixels."""
        out_preds, out_targets = [], []
        for pred, target in zip(preds, batch["targets"], strict=True):
            inv = _inverse_scale(target, pred["boxes"].device)  # [4]
            out_preds.append({**pred, "boxes": pred["boxes"] * inv})
            boxes = target["boxes"].to(inv).reshape(-1, 4) * inv  # [G, 4]
            gt = {"boxes": boxes, "labels": target["labels"].to(inv.device).long(),
                  "iscrowd": target["iscrowd"].to(inv.device).long()}
            if "area" in target:
                gt["area"] = target["area"].to(inv) * inv[0] * inv[1]
            out_targets.append(gt)
        return out_preds, out_targets

    def _eval_step(self, batch: dict[str, Any], stage: str) -> None:
        outputs = self(batch["images"])
        losses = self.model.loss(outputs, batch["targets"])
        self.log(f"{stage}/loss", losses["loss"], batch_size=len(batch["targets"]), sync_dist=True)
        preds, targets = self._original_size(batch, self.model.postprocess(outputs, batch["image_sizes"]))
        (self.val_map if stage == "val" else self.test_map).update(preds, targets)

    def _eval_end(self, stage: str) -> None:
        metric = self.val_map if stage == "val" else self.test_map
        result = metric.compute()
        metric.reset()
        self.log_dict({f"{stage}/{k}": result[k].float() for k in _LOGGED}, prog_bar=stage == "val")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_end("val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._eval_end("test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Tensor]]:
        """Detections per image, boxes in input pixels (``image_sizes`` clips them)."""
        return self.model.postprocess(self(batch["images"]), batch["image_sizes"])
