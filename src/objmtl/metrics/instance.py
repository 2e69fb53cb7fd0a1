"""Instance segmentation metrics: COCO ``segm`` and ``bbox`` AP/AR side by side, per-class AP, PR curves.

All figures come from :class:`torchmetrics.detection.MeanAveragePrecision` with ``iou_type=("bbox", "segm")`` and
the ``faster_coco_eval`` backend, with pycocotools' IoU and recall thresholds in float64 (as
:class:`~objmtl.metrics.detection.DetectionMetrics`), so they equal pycocotools' COCOeval on the source json
(``tests/test_inst_metrics_parity.py``). Targets pass ``iscrowd`` (a crowd region: a detection inside it is
neither a hit nor a miss, COCO's rule) and COCO's ``area`` (which picks small / medium / large).
The per-class table and the PR curves read the ``segm`` precision array that COCOeval accumulates
(``extended_summary``): no second matching is written here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from torchmetrics.detection import MeanAveragePrecision

from objmtl.metrics.detection import COCO_KEYS, IOU_THRESHOLDS, REC_THRESHOLDS

__all__ = ["IOU_TYPES", "InstanceMetrics", "LOGGED"]

IOU_TYPES = ("segm", "bbox")
LOGGED = tuple(f"{t}_{k}" for t in IOU_TYPES for k in (*COCO_KEYS, "mar_small", "mar_medium", "mar_large"))
"""The 12 COCO figures of each IoU type, named ``segm_map``, ``segm_map_50``, ..., ``bbox_mar_large``."""


class InstanceMetrics(MeanAveragePrecision):
    """COCO mask and box AP/AR of instance predictions (torchmetrics, faster-coco-eval).

    Under DDP every state is gathered as a whole list (``all_gather_object``, rank order): ranks may hold
    different numbers of images, and the mask states are tuples of RLEs, not tensors.

    Args:
        max_dets: the largest of COCO's max-detection thresholds (1, 10, ``max_dets``).
        kwargs: passed to :class:`torchmetrics.Metric`.
    """

    def __init__(self, *, max_dets: int = 100, **kwargs: Any) -> None:
        super().__init__(box_format="xyxy", iou_type=IOU_TYPES, class_metrics=True, average="macro",
                         extended_summary=True, backend="faster_coco_eval",
                         max_detection_thresholds=[1, 10, max_dets], iou_thresholds=list(IOU_THRESHOLDS),
                         rec_thresholds=list(REC_THRESHOLDS), **kwargs)
        self.warn_on_many_detections = False
        self._last: dict[str, Any] | None = None

    def update(self, preds: Sequence[dict[str, Tensor]],  # type: ignore[override]
               target: Sequence[dict[str, Tensor]]) -> None:
        """Adds a batch.

        Args:
            preds: per image ``boxes`` (N, 4) xyxy, ``scores`` (N,), ``labels`` (N,), ``masks`` (N, h, w) bool.
            target: per image ``boxes`` (M, 4), ``labels`` (M,), ``masks`` (M, h, w) bool, optional ``iscrowd``
                and ``area`` (COCO's; 0 or missing: the mask's area). Masks are at the image's original size.
        """
        tm_preds = [{"boxes": p["boxes"].float().reshape(-1, 4), "scores": p["scores"].float().reshape(-1),
                     "labels": p["labels"].long().reshape(-1), "masks": p["masks"].bool()} for p in preds]
        tm_target = []
        for t in target:
            labels = t["labels"].long().reshape(-1)
            item = {"boxes": t["boxes"].float().reshape(-1, 4), "labels": labels, "masks": t["masks"].bool(),
                    "iscrowd": (t["iscrowd"].reshape(-1).long() if t.get("iscrowd") is not None
                                else torch.zeros_like(labels))}
            if t.get("area") is not None:
                item["area"] = t["area"].float().reshape(-1)
            tm_target.append(item)
        self._last = None
        super().update(tm_preds, tm_target)

    def _sync_dist(self, dist_sync_fn: Any = None, process_group: Any = None) -> None:
        """Every rank's per-image states (tensors and RLE tuples), concatenated in rank order."""
        world = dist.get_world_size(group=process_group)
        for attr in self._reductions:
            mine = [t.cpu() if isinstance(t, Tensor) else t for t in getattr(self, attr)]
            parts: list[list[Any] | None] = [None] * world
            dist.all_gather_object(parts, mine, group=process_group)
            setattr(self, attr, [t.to(self.device) if isinstance(t, Tensor) else t
                                 for part in parts for t in (part or [])])

    def compute(self) -> dict[str, Any]:
        """The :data:`LOGGED` figures as floats, ``classes`` (ids with gts or detections, ascending),
        ``{segm,bbox}_map_per_class`` lists (-1: no gts) and the ``{segm,bbox}_precision`` arrays
        [T, R, K, A, M] of COCOeval."""
        if self._last is not None:
            return self._last
        raw = super().compute()
        out: dict[str, Any] = {k: float(raw[k]) for k in LOGGED}
        out["classes"] = [int(c) for c in raw["classes"].flatten().tolist()]
        for t in IOU_TYPES:
            per = raw.get(f"{t}_map_per_class")
            out[f"{t}_map_per_class"] = per.flatten().tolist() if per is not None else []
            out[f"{t}_precision"] = np.asarray(raw[f"{t}_precision"], np.float64) if f"{t}_precision" in raw else None
        self._last = out
        return out

    def reset(self) -> None:
        super().reset()
        self._last = None

    def _gt_counts(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for labels, crowd in zip(self.groundtruth_labels, self.groundtruth_crowds, strict=True):
            for c in labels[~crowd.bool()].tolist():
                counts[int(c)] = counts.get(int(c), 0) + 1
        return counts

    def _ap50(self, precision: np.ndarray | None, k: int) -> float:
        """AP at IoU 0.5 of class column ``k`` (all areas, the largest max-dets), as COCO averages it."""
        if precision is None or k >= precision.shape[2]:
            return -1.0
        p = precision[0, :, k, 0, -1]
        p = p[p > -1]
        return float(p.mean()) if p.size else -1.0

    def per_class_table(self, *, class_names: Sequence[str]) -> list[dict[str, Any]]:
        """One row per class with (non-crowd) gts: ``class_id``, ``class``, ``gts``, ``segm_ap``, ``segm_ap50``,
        ``bbox_ap``, ``bbox_ap50`` (COCO, all areas, at most ``max_dets`` detections)."""
        res = self.compute()
        counts = self._gt_counts()
        rows = []
        for k, c in enumerate(res["classes"]):
            if not counts.get(c):
                continue
            row: dict[str, Any] = {"class_id": c, "class": class_names[c] if c < len(class_names) else str(c),
                                   "gts": counts[c]}
            for t in IOU_TYPES:
                per = res[f"{t}_map_per_class"]
                row[f"{t}_ap"] = float(per[k]) if k < len(per) else -1.0
                row[f"{t}_ap50"] = self._ap50(res[f"{t}_precision"], k)
            rows.append(row)
        return rows

    def plot_pr_curves(self, *, out_png: str | Path, class_names: Sequence[str], top: int = 10) -> Path:
        """Mask precision / recall at IoU 0.5 (COCO's interpolated curve on its 101 recall points) for the ``top``
        classes by gt count, and their mean over the classes with gts (bold)."""
        from matplotlib.figure import Figure

        from objmtl.viz.plots import save_figure  # also selects the Agg backend

        res = self.compute()
        counts = self._gt_counts()
        precision = res["segm_precision"]
        grid = np.asarray(REC_THRESHOLDS)
        fig = Figure(figsize=(7, 5.5))
        ax = fig.subplots()
        curves = []
        for k, c in enumerate(res["classes"]):
            if precision is None or not counts.get(c) or k >= precision.shape[2]:
                continue
            curves.append((counts[c], c, np.clip(precision[0, :, k, 0, -1], 0, None)))
        curves.sort(key=lambda x: (-x[0], x[1]))
        for n, c, p in curves[:top]:
            name = class_names[c] if c < len(class_names) else str(c)
            ax.plot(grid, p, lw=1, label=f"{name} ({n} gts, mask AP50 {p.mean():.3f})")
        if curves:
            mean = np.mean([p for _, _, p in curves], axis=0)
            ax.plot(grid, mean, color="black", lw=2.5,
                    label=f"mean of {len(curves)} classes (mask AP50 {mean.mean():.3f})")
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision",
               title="mask precision / recall at IoU 0.5 (COCO)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
        return save_figure(fig, out_png)
