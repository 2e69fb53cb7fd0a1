"""Keypoint metrics: COCO keypoint AP/AR by OKS (faster-coco-eval) and bbox-normalised PCK.

AP/AR: the ground truth is built as a COCO dataset from the evaluated images (every instance:
crowd ones, ``area`` and ``num_keypoints`` = the labelled keypoints, as COCO's person_keypoints
json has them), the predictions as COCO keypoint results, and faster-coco-eval's
``COCOeval_faster(..., iouType="keypoints")`` scores them with the per-keypoint OKS sigmas
(:func:`oks_sigmas`). It agrees with pycocotools on the source json
(``tests/test_pose_keypoint_parity.py``). Categories are the instance classes (COCO: person).

PCK@``pck_threshold``: the share of labelled keypoints (v > 0, non-crowd persons) whose prediction
lies within ``pck_threshold`` times the longest side of the person's ground-truth box. It needs
the prediction made for each ground-truth person (``gt_index``), which top-down evaluation on
ground-truth boxes gives (on detected boxes there are no such pairs, and ``pck`` is -1).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from objmtl.errors import UserError

__all__ = ["COCO_KEYPOINT_NAMES", "COCO_SIGMAS", "KEYPOINT_KEYS", "KeypointMetrics", "coco_keypoint_eval",
           "oks_sigmas"]

log = logging.getLogger(__name__)

COCO_KEYPOINT_NAMES = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
                       "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
                       "left_knee", "right_knee", "left_ankle", "right_ankle")
COCO_SIGMAS = (0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087,
               0.087, 0.089, 0.089)
KEYPOINT_KEYS = ("ap", "ap50", "ap75", "ap_medium", "ap_large", "ar", "ar50", "ar75", "ar_medium", "ar_large")
"""COCOeval's 10 keypoint figures, in its ``stats`` order."""


def oks_sigmas(*, num_keypoints: int, sigmas: Sequence[float] | None = None,
               names: Sequence[str] | None = None) -> list[float]:
    """The OKS sigma of each keypoint: COCO's for COCO's 17 keypoints, else meta.json's.

    A UserError when K keypoints are not COCO's and meta.json gives no K sigmas.
    """
    coco = num_keypoints == 17 and (not names or tuple(names) == COCO_KEYPOINT_NAMES)
    if coco:
        return list(COCO_SIGMAS)
    if sigmas is None or len(sigmas) != num_keypoints:
        raise UserError(f"meta.json keypoints.sigmas: {0 if sigmas is None else len(sigmas)} sigmas for "
                        f"{num_keypoints} keypoints; OKS needs one per keypoint (COCO's range 0.025 to 0.107)")
    return [float(s) for s in sigmas]


def coco_keypoint_eval(*, gt: dict[str, Any], results: list[dict[str, Any]], sigmas: Sequence[float]) -> np.ndarray:
    """COCOeval's 10 keypoint stats (see :data:`KEYPOINT_KEYS`) of ``results`` against the COCO dataset ``gt``.

    -1 where COCO has nothing to average (no ground truth in that range).
    """
    from faster_coco_eval import COCO, COCOeval_faster

    if not gt["annotations"]:
        return np.full(len(KEYPOINT_KEYS), -1.0)
    coco_gt = COCO(gt)
    if not results:  # loadRes refuses an empty list: nothing found is AP 0 where there was something to find
        scored = any(g.get("num_keypoints", 0) > 0 and not g.get("iscrowd", 0) for g in gt["annotations"])
        return np.full(len(KEYPOINT_KEYS), 0.0 if scored else -1.0)
    coco_dt = coco_gt.loadRes(results)
    ev = COCOeval_faster(coco_gt, coco_dt, iouType="keypoints", kpt_oks_sigmas=list(sigmas),
                         print_function=log.debug)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return np.asarray(ev.stats[: len(KEYPOINT_KEYS)], np.float64)


def _column(state: list[Tensor] | Tensor, dtype: torch.dtype) -> Tensor:
    """A ``cat`` state as one CPU tensor: a list before a DDP sync, a tensor after it (a rank without
    images contributes an empty float tensor, hence the cast)."""
    if isinstance(state, Tensor):
        return state.cpu().to(dtype)
    return dim_zero_cat(state).cpu().to(dtype) if state else torch.zeros(0, dtype=dtype)


class KeypointMetrics(Metric):
    """COCO keypoint AP/AR and PCK over the evaluated images (DDP: states are concatenated).

    Args:
        sigmas: the OKS sigma of each of the K keypoints (:func:`oks_sigmas`).
        pck_threshold: PCK's radius as a share of the ground-truth box's longest side.
        kwargs: passed to :class:`torchmetrics.Metric`.
    """

    full_state_update = False

    def __init__(self, *, sigmas: Sequence[float], pck_threshold: float = 0.2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sigmas = [float(s) for s in sigmas]
        self.num_keypoints = len(self.sigmas)
        self.pck_threshold = pck_threshold
        for name in ("image_ids", "image_sizes", "dt_image", "dt_keypoints", "dt_scores", "dt_labels", "gt_image",
                     "gt_keypoints", "gt_boxes", "gt_area", "gt_crowd", "gt_labels"):
            self.add_state(name, default=[], dist_reduce_fx="cat")
        self.add_state("pck_hits", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("pck_total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: Sequence[dict[str, Tensor]], targets: Sequence[dict[str, Any]]) -> None:  # type: ignore[override]
        """Adds a batch of images (original pixels).

        Args:
            preds: per image ``keypoints`` (P, K, 3) x, y, confidence, ``scores`` (P,), ``labels`` (P,) and
                optional ``gt_index`` (P,): the ground-truth person each prediction was made for (-1: none).
            targets: per image ``image_id``, ``orig_size`` (h, w), ``keypoints`` (M, K, 3) x, y, v,
                ``boxes`` (M, 4) xyxy, ``labels`` (M,), ``iscrowd`` (M,), ``area`` (M,).
        """
        k = self.num_keypoints
        for pred, gt in zip(preds, targets, strict=True):
            image_id = torch.tensor([int(gt["image_id"])], dtype=torch.long, device=self.device)
            self.image_ids.append(image_id)
            self.image_sizes.append(torch.tensor([list(gt["orig_size"])], dtype=torch.long, device=self.device))
            kp = pred["keypoints"].detach().double().reshape(-1, k, 3)
            p = len(kp)
            self.dt_image.append(image_id.expand(p))
            self.dt_keypoints.append(kp.reshape(p, k * 3))
            self.dt_scores.append(pred["scores"].detach().double().reshape(p))
            self.dt_labels.append(pred["labels"].detach().long().reshape(p))
            g_kp = gt["keypoints"].to(self.device).double().reshape(-1, k, 3)
            m = len(g_kp)
            boxes = gt["boxes"].to(self.device).double().reshape(m, 4)
            crowd = gt["iscrowd"].to(self.device).bool().reshape(m)
            self.gt_image.append(image_id.expand(m))
            self.gt_keypoints.append(g_kp.reshape(m, k * 3))
            self.gt_boxes.append(boxes)
            self.gt_area.append(gt["area"].to(self.device).double().reshape(m))
            self.gt_crowd.append(crowd)
            self.gt_labels.append(gt["labels"].to(self.device).long().reshape(m))
            index = pred.get("gt_index")
            if index is None or not p:
                continue
            index = index.to(self.device).long().reshape(p)
            ok = index >= 0
            g = g_kp[index[ok]]  # (Q, K, 3)
            side = (boxes[index[ok], 2:] - boxes[index[ok], :2]).amax(-1)  # (Q,)
            labelled = (g[..., 2] > 0) & ~crowd[index[ok]][:, None]
            dist = (kp[ok, :, :2] - g[..., :2]).norm(dim=-1)
            hits = labelled & (dist <= self.pck_threshold * side[:, None])
            self.pck_hits += hits.sum().double()
            self.pck_total += labelled.sum().double()

    def coco_ground_truth(self) -> dict[str, Any]:
        """The evaluated images' ground truth as a COCO keypoints dataset (category ids = labels + 1)."""
        ids = _column(self.image_ids, torch.long).tolist()
        sizes = _column(self.image_sizes, torch.long).reshape(-1, 2).tolist()
        images = {i: {"id": i, "height": h, "width": w} for i, (h, w) in zip(ids, sizes, strict=True)}
        anns = []
        if len(_column(self.gt_image, torch.long)):
            cols = [_column(s, dtype) for s, dtype in (
                (self.gt_image, torch.long), (self.gt_keypoints, torch.float64), (self.gt_boxes, torch.float64),
                (self.gt_area, torch.float64), (self.gt_crowd, torch.bool), (self.gt_labels, torch.long))]
            for n, (img, kp, box, area, crowd, label) in enumerate(zip(*(c.tolist() for c in cols), strict=True)):
                x1, y1, x2, y2 = box
                anns.append({"id": n + 1, "image_id": img, "category_id": label + 1, "iscrowd": int(crowd),
                             "bbox": [x1, y1, x2 - x1, y2 - y1], "area": area, "keypoints": kp,
                             "num_keypoints": int(sum(v > 0 for v in kp[2::3]))})
        labels = sorted({a["category_id"] for a in anns})
        return {"images": list(images.values()), "annotations": anns,
                "categories": [{"id": c, "name": str(c - 1), "supercategory": ""} for c in labels]}

    def coco_results(self) -> list[dict[str, Any]]:
        """The predictions as COCO keypoint results (category ids = labels + 1)."""
        cols = [_column(s, dtype).tolist() for s, dtype in (
            (self.dt_image, torch.long), (self.dt_keypoints, torch.float64), (self.dt_scores, torch.float64),
            (self.dt_labels, torch.long))]
        return [{"image_id": img, "category_id": label + 1, "keypoints": kp, "score": score}
                for img, kp, score, label in zip(*cols, strict=True)]

    def compute(self) -> dict[str, float]:
        """:data:`KEYPOINT_KEYS` (COCO AP/AR by OKS; -1 without ground truth) and ``pck`` (-1 without pairs)."""
        stats = coco_keypoint_eval(gt=self.coco_ground_truth(), results=self.coco_results(), sigmas=self.sigmas)
        out = {key: float(v) for key, v in zip(KEYPOINT_KEYS, stats, strict=True)}
        total = float(self.pck_total)
        out["pck"] = float(self.pck_hits) / total if total else -1.0
        return out
