"""Detection metrics: COCO box AP/AR (torchmetrics), VOC-style mAP and recall, per-class table, PR curves.

COCO figures (``map``, ``map_50``, ``map_75``, ``map_small/medium/large``, ``mar_1/10/100`` and the
per-class AP) come from :class:`torchmetrics.detection.MeanAveragePrecision` with the
``faster_coco_eval`` backend. Targets pass their ``iscrowd`` and ``area`` on, so crowd regions are
handled as COCO does and the small / medium / large split uses COCO's (mask) areas, which makes the
figures agree with ``pycocotools`` on the source json (``tests/test_detection_metrics.py``).

``voc_map`` and ``voc_recall`` are computed here: no library scores VOC with difficult flags the
way ObjectiveMTL (``--eval map`` / ``--eval recall``) and mmdet's ``eval_map`` do. Per class, the
detections of each image (best first, at most ``max_dets``) are matched greedily to the gt box of
highest IoU; IoU >= 0.5 with a free gt is a TP, with an already matched gt a FP (a duplicate), with
an ignored gt (difficult or crowd) neither; IoU < 0.5 is a FP. AP is the area under the
monotone precision envelope over all recall points (VOC2010+, mmdet's ``'area'`` mode); ``voc_map``
averages it over the classes that have gts. ``voc_recall`` is the share of all (not ignored) gts
that a detection of their class found. For the COCO figures a difficult box counts as a crowd box,
as in mmdet's VOC-to-COCO converter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from torchmetrics.detection import MeanAveragePrecision

__all__ = ["COCO_KEYS", "ClassCurve", "DetectionMetrics", "target_from_ann", "voc_ap"]

# pycocotools' Params, in float64: torchmetrics' defaults come from float32 torch.linspace (0.0099999998
# for 0.01, ...), which moves the recall points that COCO's precision is read at and shifts AP by ~1e-4.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10).tolist()
REC_THRESHOLDS = np.linspace(0.0, 1.0, 101).tolist()
COCO_KEYS = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_1", "mar_10", "mar_100")


@dataclass
class ClassCurve:
    """The VOC precision/recall curve of one class at IoU 0.5 (detections best first)."""

    num_gts: int
    num_dets: int
    recall: np.ndarray
    precision: np.ndarray
    ap: float

    @property
    def final_recall(self) -> float:
        return float(self.recall[-1]) if self.recall.size else 0.0


def voc_ap(*, recall: np.ndarray, precision: np.ndarray) -> float:
    """All-point interpolated AP (VOC2010+, mmdet ``mode='area'``) of one ranked list."""
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of xyxy boxes a (N, 4) and b (M, 4), no +1 pixel (mmdet's default)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clip(0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clip(0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _xyxy(boxes: Tensor) -> np.ndarray:
    """The metric's stored xywh boxes as float64 xyxy."""
    b = boxes.detach().cpu().double().numpy().reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)


def _match(dets: np.ndarray, gts: np.ndarray, ignore: np.ndarray,
           iou_thr: float) -> tuple[np.ndarray, np.ndarray]:
    """TP and FP flags of detections (best first) against one image's gts of one class."""
    tp, fp = np.zeros(len(dets)), np.zeros(len(dets))
    if not len(gts):
        fp[:] = 1
        return tp, fp
    ious = _iou(dets, gts)
    best, arg = ious.max(1), ious.argmax(1)
    covered = np.zeros(len(gts), dtype=bool)
    for i in range(len(dets)):
        if best[i] >= iou_thr:
            g = arg[i]
            if ignore[g]:
                continue
            if covered[g]:
                fp[i] = 1
            else:
                tp[i], covered[g] = 1, True
        else:
            fp[i] = 1
    return tp, fp


def _envelope(cv: ClassCurve, grid: np.ndarray) -> np.ndarray:
    """The class's monotone precision envelope at the recall points ``grid`` (0 past its final recall)."""
    if not cv.precision.size:
        return np.zeros_like(grid)
    env = np.maximum.accumulate(cv.precision[::-1])[::-1]
    idx = np.searchsorted(cv.recall, grid, side="left")
    return np.where(idx < env.size, env[np.minimum(idx, env.size - 1)], 0.0)


def target_from_ann(ann: dict[str, Any], *, device: torch.device | str | None = None) -> dict[str, Tensor]:
    """A shard sample's ``ann`` (xyxy ``boxes``, ``classes``, ``iscrowd``, ``area``, ``difficult``) as target.

    Args:
        ann: the decoded ``KEY.json`` of a sample.
        device: where the tensors go.
    """
    n = len(ann.get("classes", []))
    out = {"boxes": torch.tensor(ann.get("boxes", []), dtype=torch.float32, device=device).reshape(n, 4),
           "labels": torch.tensor(ann.get("classes", []), dtype=torch.long, device=device).reshape(n)}
    for key, dtype in (("iscrowd", torch.long), ("area", torch.float32), ("difficult", torch.long)):
        if ann.get(key) is not None and len(ann[key]) == n:
            out[key] = torch.tensor(ann[key], dtype=dtype, device=device).reshape(n)
    return out


class DetectionMetrics(MeanAveragePrecision):
    """COCO box AP/AR (torchmetrics, faster-coco-eval) plus objmtl's VOC mAP and recall at IoU 0.5.

    The state is MeanAveragePrecision's own per-image list states. Under DDP they are gathered as whole
    lists (``all_gather_object``, in rank order) rather than one ``all_gather`` per image as torchmetrics
    does, which would hang when ranks hold different numbers of images (an evaluation split that does
    not divide by the world size).
    The ``iscrowd`` state holds crowd *or* difficult, the boxes the VOC part ignores.

    Args:
        max_dets: the largest of COCO's max-detection thresholds (1, 10, ``max_dets``), and the VOC
            part's limit per image and class.
        voc_iou: the IoU of a VOC match.
        extended_summary: also return torchmetrics' precision / recall arrays.
        kwargs: passed to :class:`torchmetrics.Metric` (``dist_sync_on_step``, ``compute_on_cpu``, ...).
    """

    def __init__(self, *, max_dets: int = 100, voc_iou: float = 0.5, extended_summary: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(box_format="xyxy", iou_type="bbox", class_metrics=True, average="macro",
                         extended_summary=extended_summary, backend="faster_coco_eval",
                         max_detection_thresholds=[1, 10, max_dets], iou_thresholds=list(IOU_THRESHOLDS),
                         rec_thresholds=list(REC_THRESHOLDS), **kwargs)
        self.max_dets, self.voc_iou = max_dets, voc_iou
        self.warn_on_many_detections = False
        self._curves: dict[int, ClassCurve] = {}
        self._coco_ap: dict[int, float] = {}

    def update(self, preds: Sequence[dict[str, Tensor]],  # type: ignore[override]
               target: Sequence[dict[str, Tensor]]) -> None:
        """Adds a batch (positional, torchmetrics' protocol).

        Args:
            preds: per image ``boxes`` (N, 4) xyxy pixels, ``scores`` (N,), ``labels`` (N,).
            target: per image ``boxes`` (M, 4) xyxy, ``labels`` (M,), optional ``iscrowd``, ``area``
                (COCO's; 0 or missing: the box area) and ``difficult`` (M,).
        """
        tm_preds = [{"boxes": p["boxes"].float().reshape(-1, 4), "scores": p["scores"].float().reshape(-1),
                     "labels": p["labels"].long().reshape(-1)} for p in preds]
        tm_target = []
        for t in target:
            labels = t["labels"].long().reshape(-1)
            ignore = torch.zeros_like(labels, dtype=torch.bool)
            for key in ("iscrowd", "difficult"):
                if t.get(key) is not None:
                    ignore |= t[key].reshape(-1).bool()
            item = {"boxes": t["boxes"].float().reshape(-1, 4), "labels": labels, "iscrowd": ignore.long()}
            if t.get("area") is not None:
                item["area"] = t["area"].float().reshape(-1)
            tm_target.append(item)
        super().update(tm_preds, tm_target)

    def _sync_dist(self, dist_sync_fn: Any = None, process_group: Any = None) -> None:
        """Every rank's per-image states, concatenated in rank order (ranks may hold unequal counts)."""
        world = dist.get_world_size(group=process_group)
        for attr in self._reductions:
            parts: list[list[Tensor] | None] = [None] * world
            dist.all_gather_object(parts, [t.cpu() for t in getattr(self, attr)], group=process_group)
            setattr(self, attr, [t.to(self.device) for part in parts for t in (part or [])])

    def _voc_curves(self) -> dict[int, ClassCurve]:
        """Per class: TP/FP of every detection over all images, ranked by score."""
        flags: dict[int, list[np.ndarray]] = {}
        num_gts: dict[int, int] = {}
        for i in range(len(self.groundtruth_labels)):
            g_box, g_lab = _xyxy(self.groundtruth_box[i]), self.groundtruth_labels[i].cpu().numpy()
            g_ign = self.groundtruth_crowds[i].cpu().numpy().astype(bool)
            d_box, d_lab = _xyxy(self.detection_box[i]), self.detection_labels[i].cpu().numpy()
            d_score = self.detection_scores[i].detach().cpu().double().numpy()
            for c in np.union1d(g_lab, d_lab).tolist():
                gm, dm = g_lab == c, np.flatnonzero(d_lab == c)
                num_gts[c] = num_gts.get(c, 0) + int((gm & ~g_ign).sum())
                dm = dm[np.argsort(-d_score[dm], kind="stable")][: self.max_dets]
                tp, fp = _match(d_box[dm], g_box[gm], g_ign[gm], self.voc_iou)
                flags.setdefault(c, []).append(np.stack([d_score[dm], tp, fp], axis=1))
        curves = {}
        for c, parts in flags.items():
            rows = np.concatenate(parts)
            rows = rows[np.argsort(-rows[:, 0], kind="stable")]
            tp, fp = np.cumsum(rows[:, 1]), np.cumsum(rows[:, 2])
            recall = tp / max(num_gts[c], 1)
            precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
            kept = (rows[:, 1] + rows[:, 2]) > 0  # drop the ignored ones (neither TP nor FP)
            recall, precision = recall[kept], precision[kept]
            ap = voc_ap(recall=recall, precision=precision) if num_gts[c] else 0.0
            curves[c] = ClassCurve(num_gts=num_gts[c], num_dets=int(kept.sum()), recall=recall,
                                   precision=precision, ap=ap)
        return curves

    def compute(self) -> dict[str, Any]:
        """COCO keys (see :data:`COCO_KEYS`) and ``voc_map``, ``voc_recall`` as floats; per class lists.

        ``map_per_class`` / ``voc_ap_per_class`` are indexed by class id up to the largest id seen;
        -1 marks a class without gts (COCO's convention). ``extended_summary`` adds torchmetrics'
        ``precision``, ``recall`` and ``scores`` arrays.
        """
        raw = super().compute()
        out: dict[str, Any] = {k: float(raw[k]) for k in COCO_KEYS}
        classes = [int(c) for c in raw["classes"].flatten().tolist()]
        per = raw["map_per_class"].flatten().tolist() if "map_per_class" in raw else []
        self._coco_ap = dict(zip(classes, per, strict=False)) if len(per) == len(classes) else {}
        self._curves = self._voc_curves()
        with_gts = [c for c, cv in self._curves.items() if cv.num_gts > 0]
        out["voc_map"] = float(np.mean([self._curves[c].ap for c in with_gts])) if with_gts else 0.0
        total = sum(self._curves[c].num_gts for c in with_gts)
        found = sum(self._curves[c].final_recall * self._curves[c].num_gts for c in with_gts)
        out["voc_recall"] = found / total if total else 0.0
        n = max(classes, default=-1) + 1
        out["map_per_class"] = [float(self._coco_ap.get(c, -1.0)) for c in range(n)]
        out["voc_ap_per_class"] = [self._curves[c].ap if c in with_gts else -1.0 for c in range(n)]
        for key in ("precision", "recall", "scores"):
            if key in raw:
                out[key] = raw[key]
        return out

    def per_class_table(self, *, class_names: Sequence[str]) -> list[dict[str, Any]]:
        """One row per class with gts: ``class_id``, ``class``, ``gts``, ``dets``, ``ap`` (COCO .5:.95),
        ``ap50`` (VOC) and ``recall`` (VOC, at IoU 0.5), in class-id order."""
        self.compute()
        rows = []
        for c in sorted(self._curves):
            cv = self._curves[c]
            if cv.num_gts == 0:
                continue
            name = class_names[c] if c < len(class_names) else str(c)
            rows.append({"class_id": c, "class": name, "gts": cv.num_gts, "dets": cv.num_dets,
                         "ap": float(self._coco_ap.get(c, -1.0)), "ap50": cv.ap, "recall": cv.final_recall})
        return rows

    def plot_pr_curves(self, *, out_png: str | Path, class_names: Sequence[str], top: int = 10) -> Path:
        """Precision/recall at IoU 0.5 for the ``top`` classes by gt count, and the class mean (bold).

        The mean averages each class's monotone precision envelope on 101 recall points (zero beyond
        the class's final recall) over the classes with gts.
        """
        from matplotlib.figure import Figure

        from objmtl.viz.plots import save_figure  # also selects the Agg backend

        self.compute()
        with_gts = sorted((c for c, cv in self._curves.items() if cv.num_gts > 0),
                          key=lambda c: (-self._curves[c].num_gts, c))
        grid = np.linspace(0, 1, 101)
        envelopes = [_envelope(self._curves[c], grid) for c in with_gts]
        fig = Figure(figsize=(7, 5.5))
        ax = fig.subplots()
        for c in with_gts[:top]:
            cv = self._curves[c]
            name = class_names[c] if c < len(class_names) else str(c)
            ax.plot(np.concatenate([[0.0], cv.recall]), np.concatenate([[1.0], cv.precision]), lw=1,
                    label=f"{name} ({cv.num_gts} gts, AP50 {cv.ap:.3f})")
        if envelopes:
            voc_map = float(np.mean([self._curves[c].ap for c in with_gts]))
            ax.plot(grid, np.mean(envelopes, axis=0), color="black", lw=2.5,
                    label=f"mean of {len(with_gts)} classes (mAP50 {voc_map:.3f})")
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision",
               title="precision / recall at IoU 0.5")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
        return save_figure(fig, out_png)
