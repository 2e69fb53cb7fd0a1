"""Instance segmentation: Mask R-CNN's losses in training; COCO mask and box AP at the original image sizes."""

from __future__ import annotations

import json
import logging
from typing import Any

import torch
from torch import Tensor, nn

from objmtl.data.instance_masks import decode_rles
from objmtl.metrics.instance import LOGGED, InstanceMetrics
from objmtl.models.instance.mask_rcnn import paste_masks
from objmtl.tasks.base import BaseTask, OptimizerFactory, SchedulerFactory

__all__ = ["InstanceTask"]


class InstanceTask(BaseTask):
    """Trains an :class:`~objmtl.models.instance.InstanceSegmenter` on padded batches of
    :class:`~objmtl.data.inst_samples.InstanceSamples`.

    Training logs ``train/loss`` and torchvision's five terms (``train/loss_objectness``, ``train/loss_rpn_box_reg``,
    ``train/loss_classifier``, ``train/loss_box_reg``, ``train/loss_mask``); crowd instances are left out of the
    loss (proposals over them count as background, as in torchvision's reference, which has no ignore regions).
    Each epoch logs what the samples lost on the way: ``data/dropped_instances`` (every instance that did not
    reach the loss: no mask, or a box or mask the augmentation cut away) and, of those,
    ``data/instances_without_mask`` (an outline that is no mask: see :mod:`objmtl.data.instance_masks`).
    Evaluation runs the model in eval mode (torchvision's heads give detections, not losses, there, so there is
    no ``val/loss``), maps boxes back to each image's original size with its ``scale``, pastes the masks at that
    size and scores them against the source outlines (the samples' ``rles``) with
    :class:`~objmtl.metrics.instance.InstanceMetrics`: ``val/segm_map``, ``val/segm_map_50``, ..., and
    ``val/bbox_*`` (see :data:`~objmtl.metrics.instance.LOGGED`), the same under ``test/``.

    At the end of each evaluation (rank zero, not in the sanity check) it writes ``plots/pr_curves_{stage}.png``
    (mask PR at IoU 0.5) and ``per_class_ap_{stage}.json`` and keeps the rows in ``per_class[stage]``.
    ``validation_step`` / ``test_step`` return ``{"preds", "targets"}`` in original pixels (masks as bool
    tensors) for ``objmtl-test``'s writers (``objmtl.runs.inst_outputs``).

    Args:
        model: the instance segmenter (``num_classes``, ``mask_thresh``).
        class_names: names of its classes (checked against ``num_classes``); optional.
        optimizer, scheduler, run_config, nonfinite_loss: see :class:`~objmtl.tasks.base.BaseTask`.
    """

    main_metric = "segm_map_50"

    def __init__(self, *, model: nn.Module, class_names: list[str] | None = None,
                 optimizer: OptimizerFactory | None = None, scheduler: SchedulerFactory | None = None,
                 run_config: dict[str, Any] | None = None, nonfinite_loss: str = "stop") -> None:
        super().__init__(model=model, optimizer=optimizer, scheduler=scheduler, run_config=run_config,
                         nonfinite_loss=nonfinite_loss)
        self.class_names = list(class_names) if class_names is not None else None
        if self.class_names is not None and model.num_classes != len(self.class_names):
            raise ValueError(f"model has {model.num_classes} classes for {len(self.class_names)} class names")
        coco_log = logging.getLogger("faster_coco_eval")
        if coco_log.level == logging.NOTSET:  # its summary at every evaluation: the logged metrics say it
            coco_log.setLevel(logging.WARNING)
        self.metrics = nn.ModuleDict({"val": InstanceMetrics(), "test": InstanceMetrics()})
        self.per_class: dict[str, list[dict[str, Any]]] = {}

    def forward(self, images: Tensor, image_sizes: Tensor) -> list[dict[str, Tensor]]:
        """Detections per image (the model in eval mode): boxes in input pixels, 28 x 28 mask probabilities."""
        return self.model(images, image_sizes)

    @staticmethod
    def _loss_targets(targets: list[dict[str, Any]]) -> list[dict[str, Tensor]]:
        """The non-crowd instances of each image, as the model's loss takes them."""
        out = []
        for t in targets:
            keep = ~t["iscrowd"].bool()
            out.append({"boxes": t["boxes"][keep], "labels": t["labels"][keep], "masks": t["masks"][keep]})
        return out

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        losses = self.model(batch["images"], batch["image_sizes"], self._loss_targets(batch["targets"]))
        losses = {"loss": sum(losses.values()), **losses}
        n = len(batch["targets"])
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=n)
        # what the samples lost on the way (outlines that are no mask, boxes and masks a crop cut away): epoch sums
        self.log("data/dropped_instances", float(batch.get("dropped_boxes", 0)), on_step=False, on_epoch=True,
                 reduce_fx="sum", sync_dist=True)
        self.log("data/instances_without_mask", float(batch.get("dropped_masks", 0)), on_step=False, on_epoch=True,
                 reduce_fx="sum", sync_dist=True)
        self.log_dict({f"train/{k}": v.detach() for k, v in losses.items() if k != "loss"}, batch_size=n)
        return self.checked_loss(losses)

    def _original_size(self, batch: dict[str, Any], dets: list[dict[str, Tensor]]
                       ) -> tuple[list[dict[str, Tensor]], list[dict[str, Tensor]]]:
        """Predictions (masks pasted) and targets (masks decoded from the source RLEs) at original sizes."""
        preds, targets = [], []
        thresh = float(self.model.mask_thresh)
        for det, target in zip(dets, batch["targets"], strict=True):
            h, w = (int(v) for v in target["orig_size"])
            sy, sx = (float(s) for s in target["scale"])
            inv = torch.tensor([1 / sx, 1 / sy, 1 / sx, 1 / sy], device=det["boxes"].device)
            boxes = (det["boxes"] * inv).clamp(min=0)
            boxes = torch.minimum(boxes, torch.tensor([w, h, w, h], device=boxes.device, dtype=boxes.dtype))
            preds.append({"boxes": boxes, "scores": det["scores"], "labels": det["labels"],
                          "masks": paste_masks(det["masks"], boxes, (h, w), thresh=thresh)})
            gt_masks = torch.from_numpy(decode_rles(target["rles"], height=h, width=w)).bool()
            targets.append({"boxes": target["boxes"].to(inv).reshape(-1, 4) * inv, "labels": target["labels"],
                            "masks": gt_masks.to(inv.device), "iscrowd": target["iscrowd"].long(),
                            "area": target["area"].to(inv) * inv[0] * inv[1]})
        return preds, targets

    def _eval_step(self, batch: dict[str, Any], stage: str,
                   dataloader_idx: int = 0) -> dict[str, list[dict[str, Tensor]]]:
        preds, targets = self._original_size(batch, self(batch["images"], batch["image_sizes"]))
        self.metrics[stage].update(preds, targets)
        return {"preds": preds, "targets": targets}

    def _eval_end(self, stage: str) -> None:
        metric = self.metrics[stage]
        result = metric.compute()
        self.log_dict({f"{stage}/{k}": float(result[k]) for k in LOGGED if k != self.main_metric})
        self.log(f"{stage}/{self.main_metric}", float(result[self.main_metric]), prog_bar=stage == "val")
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            names = self.class_names or []
            rows = metric.per_class_table(class_names=names)
            self.per_class[stage] = rows
            metric.plot_pr_curves(out_png=self.plot_dir / f"pr_curves_{stage}.png", class_names=names)
            (self.plot_dir.parent / f"per_class_ap_{stage}.json").write_text(json.dumps(rows, indent=1) + "\n")
        metric.reset()

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Tensor]]:
        """Detections per image, boxes in input pixels, masks as 28 x 28 probabilities in their boxes."""
        return self(batch["images"], batch["image_sizes"])
