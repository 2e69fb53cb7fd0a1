"""What ``objmtl-test`` writes for a pose run besides metrics: COCO keypoint results and skeleton pictures.

:class:`PoseOutputs` (an :class:`~objmtl.runs.outputs.EvalOutputs`) keeps, per evaluated image, the
keypoints predicted on each person box and the ground truth that :class:`~objmtl.tasks.pose.PoseTask`
returns (original pixels). From those:

- :func:`keypoint_results` / ``--out``: COCO keypoint results ``[{"image_id", "category_id",
  "keypoints": [x, y, score] * K, "score"}]``, ``category_id`` the source's id of the box's class
  (meta.json's ``class_ids``: COCO's person = 1), so the file scores against the source json as it is.
- ``--show-dir``: per image, the predicted skeletons (keypoints of confidence >= ``score_thr``) beside
  the ground truth (crowd boxes grey), drawn on the original image re-read from the shards.
"""

from __future__ import annotations

import json
from collections import defaultdict, deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from PIL import Image

from objmtl.data.schema import Meta, read_meta
from objmtl.data.shard_reader import sample_image_id
from objmtl.metrics.keypoints import KEYPOINT_KEYS
from objmtl.runs.outputs import EvalOutputs, raw_samples
from objmtl.viz.draw import IGNORE_COLOR, class_color, draw_boxes, draw_keypoints, side_by_side

__all__ = ["EVAL_GROUPS", "PoseOutputs", "keypoint_results", "render", "write_results"]

EVAL_GROUPS: dict[str, tuple[str, ...]] = {"keypoints": KEYPOINT_KEYS, "pck": ("pck",)}
"""``objmtl-test --eval`` groups -> the metric names they print."""


def _np(t: Any, dtype: Any = np.float64) -> np.ndarray:
    return t.detach().cpu().numpy().astype(dtype)


class PoseOutputs(EvalOutputs):
    """``--eval keypoints|pck``, ``--out`` COCO keypoint results, ``--show-dir`` skeletons, dropped persons."""

    task = "pose"
    out_name = "pose.json"  # inside a multi-task run's --out DIR
    eval_groups = EVAL_GROUPS
    default_groups = ("keypoints", "pck")

    def collect(self, outputs: Any, batch: dict[str, Any]) -> None:
        if not isinstance(outputs, dict) or "preds" not in outputs:
            return
        for pred, gt in zip(outputs["preds"], outputs["targets"], strict=True):
            self.items.append({
                "image_id": int(gt["image_id"]), "orig_size": tuple(gt["orig_size"]),
                "keypoints": _np(pred["keypoints"]), "scores": _np(pred["scores"]),
                "labels": _np(pred["labels"], np.int64), "boxes": _np(pred["boxes"]),
                "gt_keypoints": _np(gt["keypoints"]), "gt_boxes": _np(gt["boxes"]),
                "gt_labels": _np(gt["labels"], np.int64), "gt_ignore": _np(gt["iscrowd"], bool)})

    def report(self, task: L.LightningModule, split: str) -> dict[str, Any]:
        stage = "val" if split == "val" else "test"
        return {"dropped_persons": dict(getattr(task, "dropped", {}).get(stage, {}))}

    def print_report(self, report: dict[str, Any]) -> None:
        dropped = {k: v for k, v in report.get("dropped_persons", {}).items() if v}
        if dropped:
            print("persons not evaluated: " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in dropped.items()))

    def write(self, out: Path, *, meta: Meta, class_names: Sequence[str]) -> str:
        written = write_results(images=self.items, out=out, category_ids=meta.class_ids)
        return f"results: {written}" + ("" if meta.class_ids else " (category_id = class index of meta.json)")

    def show(self, out_dir: Path, *, roots: Sequence[Path], split: str, class_names: Sequence[str],
             score_thr: float) -> int:
        meta = read_meta(roots[0])
        skeleton = meta.keypoints.skeleton if meta.keypoints else []
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        pending: dict[int, deque[dict[str, Any]]] = defaultdict(deque)
        for im in self.items:
            pending[im["image_id"]].append(im)
        left, written, seen = len(self.items), 0, defaultdict(int)
        for sample in raw_samples([Path(r) for r in roots], split):
            if left == 0:
                break
            image_id = sample_image_id(sample)
            queue = pending.get(image_id, deque())
            outputs = next((o for o in queue if tuple(o["orig_size"]) == sample["image"].shape[:2]), None)
            if outputs is None:
                continue
            queue.remove(outputs)
            left -= 1
            picture = render(image=sample["image"], outputs=outputs, class_names=class_names, skeleton=skeleton,
                             score_thr=score_thr)
            name = str(image_id) if not seen[image_id] else f"{image_id}_{seen[image_id]}"
            seen[image_id] += 1
            Image.fromarray(picture).save(out_dir / f"{name}.png")
            written += 1
        return written


def keypoint_results(images: Sequence[dict[str, Any]], *,
                     category_ids: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """COCO keypoint results of every predicted person, original pixels, best first per image."""
    out = []
    for im in images:
        for i in np.argsort(-im["scores"], kind="stable"):
            label = int(im["labels"][i])
            flat = [round(float(v), 3) for v in im["keypoints"][i].reshape(-1)]
            out.append({"image_id": im["image_id"], "category_id": int(category_ids[label]) if category_ids else label,
                        "keypoints": flat, "score": round(float(im["scores"][i]), 5)})
    return out


def write_results(*, images: Sequence[dict[str, Any]], out: str | Path,
                  category_ids: Sequence[int] | None = None) -> Path:
    """Writes :func:`keypoint_results` as a json list to ``out``; returns the path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(keypoint_results(images, category_ids=category_ids)) + "\n")
    return out


def render(*, image: np.ndarray, outputs: dict[str, Any], class_names: Sequence[str],
           skeleton: Sequence[Sequence[int]], score_thr: float) -> np.ndarray:
    """Predicted skeletons (keypoints of confidence >= ``score_thr``) beside the ground truth."""
    kps = outputs["keypoints"].copy()
    kps[..., 2] = np.where(kps[..., 2] >= score_thr, 2, 0)
    colors = [class_color(c) for c in outputs["labels"].tolist()]
    pred = draw_boxes(image, outputs["boxes"], outputs["labels"].tolist(), class_names=class_names,
                      scores=outputs["scores"].tolist(), colors=colors, width=1)
    pred = draw_keypoints(pred, kps, skeleton=skeleton, colors=colors)
    gt_labels = outputs["gt_labels"].tolist()
    gt_colors = [IGNORE_COLOR if ign else class_color(c) for c, ign in zip(gt_labels, outputs["gt_ignore"],
                                                                           strict=True)]
    gt = draw_boxes(image, outputs["gt_boxes"], gt_labels, class_names=class_names, colors=gt_colors, width=1)
    gt = draw_keypoints(gt, outputs["gt_keypoints"], skeleton=skeleton, colors=gt_colors)
    n_gt = int((~outputs["gt_ignore"]).sum())
    return side_by_side([pred, gt], [f"prediction ({len(kps)} persons)", f"ground truth ({n_gt} persons)"])
