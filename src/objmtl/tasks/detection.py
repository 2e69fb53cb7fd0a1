"""Object detection: a dense detector's losses in training; COCO and VOC box metrics on the original sizes."""

from __future__ import annotations

import json
import logging
from typing import Any

import torch
from torch import Tensor, nn

from objmtl.metrics.detection import COCO_KEYS, DetectionMetrics
from objmtl.tasks.base import BaseTask, OptimizerFactory, SchedulerFactory

__all__ = ["DetectionTask"]

_LOGGED = (*COCO_KEYS, "voc_map", "voc_recall")


def _inverse_scale(target: dict[str, Any], device: torch.device) -> Tensor:
    """[4] factors (1/sx, 1/sy, 1/sx, 1/sy) taking input-pixel xyxy boxes back to the original image."""
    sy, sx = (float(s) for s in target["scale"])
    return torch.tensor([1 / sx, 1 / sy, 1 / sx, 1 / sy], device=device)


class DetectionTask(BaseTask):
    """Trains a :class:`~objmtl.models.detection.DenseDetector` or a
    :class:`~objmtl.models.detection.DeformableDETR` on padded batches of
    :class:`~objmtl.data.det_samples.DetectionSamples`.

    Batches are ``{"images": [N, 3, Hp, Wp], "image_sizes": [N, 2], "targets": [...]}``. Logs ``train/loss``
    and each loss term (``train/loss_cls``, ...); ``val/loss``, the COCO box metrics ``val/map``,
    ``val/map_50``, ``val/map_75``, ``val/map_{small,medium,large}``, ``val/mar_{1,10,100}`` and the VOC
    ones ``val/voc_map`` (AP at IoU 0.5) and ``val/voc_recall`` (see
    :class:`~objmtl.metrics.detection.DetectionMetrics`), and the same under ``test/``. Predicted and
    ground-truth boxes are mapped back to each image's original size with its ``scale`` (sy, sx) before
    evaluation, so the areas of COCO's size ranges are those of the source image; a target's
    ``difficult`` flags, when the batch carries them, make those boxes ignored as crowd boxes are.

    At the end of each evaluation (rank zero, not in the sanity check) it writes
    ``plots/pr_curves_{val,test}.png`` and ``per_class_ap_{val,test}.json`` (in the trainer's
    ``default_root_dir``: the per-class rows of
    :meth:`~objmtl.metrics.detection.DetectionMetrics.per_class_table`), and keeps those rows in
    ``per_class[stage]``. ``validation_step`` / ``test_step`` return ``{"preds", "targets"}`` in
    original pixels, for callbacks (``objmtl.runs.det_outputs``).

    Args:
        model: The detector: ``forward``, ``loss`` and ``postprocess``, ``num_classes``.
        class_names: Names of the model's classes (checked against ``num_classes``); optional.
        optimizer: See :class:`~objmtl.tasks.base.BaseTask`.
        scheduler: See :class:`~objmtl.tasks.base.BaseTask`.
        run_config: See :class:`~objmtl.tasks.base.BaseTask`.
    """

    main_metric = "map_50"

    def __init__(self, *, model: nn.Module, class_names: list[str] | None = None,
                 optimizer: OptimizerFactory | None = None, scheduler: SchedulerFactory | None = None,
                 run_config: dict[str, Any] | None = None, nonfinite_loss: str = "stop") -> None:
        super().__init__(model=model, optimizer=optimizer, scheduler=scheduler, run_config=run_config,
                         nonfinite_loss=nonfinite_loss)
        self.class_names = list(class_names) if class_names is not None else None
        if self.class_names is not None and getattr(model, "num_classes", len(self.class_names)) != len(
                self.class_names):
            raise ValueError(f"model has {model.num_classes} classes for {len(self.class_names)} class names")
        coco_log = logging.getLogger("faster_coco_eval")
        if coco_log.level == logging.NOTSET:  # its 12-line summary at every evaluation: the metrics say it
            coco_log.setLevel(logging.WARNING)
        self.val_map = DetectionMetrics()
        self.test_map = DetectionMetrics()
        self.per_class: dict[str, list[dict[str, Any]]] = {}

    def forward(self, images: Tensor, image_sizes: Tensor | None = None) -> dict[str, Any]:
        """The model's raw outputs; a model with ``uses_image_sizes`` (Deformable DETR) also gets the batch's
        valid (h, w) sizes [N, 2], to mask the padding."""
        if image_sizes is not None and getattr(self.model, "uses_image_sizes", False):
            return self.model(images, image_sizes)
        return self.model(images)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        return self.checked_loss(self.training_losses(batch))

    def training_losses(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """The batch's loss terms (``loss`` is their total), logged under ``train/``."""
        outputs = self(batch["images"], batch["image_sizes"])
        losses = self.model.loss(outputs, batch["targets"])
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=len(batch["targets"]))
        self.log_dict({f"train/{k}": v.detach() for k, v in losses.items() if k != "loss"},
                      batch_size=len(batch["targets"]))
        return losses

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
            if target.get("difficult") is not None:
                gt["difficult"] = torch.as_tensor(target["difficult"], device=inv.device).long()
            out_targets.append(gt)
        return out_preds, out_targets

    def _eval_step(self, batch: dict[str, Any], stage: str,
                   dataloader_idx: int = 0) -> dict[str, list[dict[str, Tensor]]]:
        outputs = self(batch["images"], batch["image_sizes"])
        losses = self.model.loss(outputs, batch["targets"])
        self.log_eval_loss(stage, losses["loss"], batch_size=len(batch["targets"]))
        preds, targets = self._original_size(batch, self.model.postprocess(outputs, batch["image_sizes"]))
        (self.val_map if stage == "val" else self.test_map).update(preds, targets)
        return {"preds": preds, "targets": targets}

    def _eval_end(self, stage: str) -> None:
        metric = self.val_map if stage == "val" else self.test_map
        result = metric.compute()
        self.log_dict({f"{stage}/{k}": float(result[k]) for k in _LOGGED},
                      prog_bar=stage == "val")
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            names = self.class_names or []
            rows = metric.per_class_table(class_names=names)
            self.per_class[stage] = rows
            metric.plot_pr_curves(out_png=self.plot_dir / f"pr_curves_{stage}.png", class_names=names)
            out = self.plot_dir.parent / f"per_class_ap_{stage}.json"
            out.write_text(json.dumps(rows, indent=1) + "\n")
        metric.reset()

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Tensor]]:
        """Detections per image, boxes in input pixels (``image_sizes`` clips them)."""
        return self.model.postprocess(self(batch["images"], batch["image_sizes"]), batch["image_sizes"])
