"""What ``objmtl-test`` writes for a detection run besides metrics: COCO results json and pictures.

:class:`DetectionOutputs` (an :class:`~objmtl.runs.outputs.EvalOutputs`) keeps, per evaluated image, the detections
and ground truth that :class:`~objmtl.tasks.detection.DetectionTask` returns from its
``validation_step`` / ``test_step`` (already in original-image pixels, the eval transform's scale
undone). From those:

- :func:`write_results` writes COCO-style results ``[{"image_id", "category_id", "bbox": [x, y, w, h],
  "score"}]`` in original pixels. ``category_id`` is the source dataset's id of the predicted class
  (``meta.json``'s ``class_ids``: COCO's 1..90, YOLO ids with gaps), so the file can be scored
  against the source annotations as it is; shards without ``class_ids`` get the contiguous label.
- :func:`show_predictions` draws, per image, the predictions scoring at least ``score_thr`` beside
  the ground truth (crowd / ignored boxes in grey), on the decoded original image. The model only
  ever sees the transformed tensor, so the original pixels are re-read from the split's shards
  (decode only, no transform) and matched to the collected outputs by ``image_id``, which every
  converter and the synthetic writer set; images sharing an id are matched in reading order.
"""

from __future__ import annotations

import json
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from PIL import Image

from objmtl.data.schema import Meta
from objmtl.data.shard_reader import sample_image_id
from objmtl.metrics.detection import COCO_KEYS
from objmtl.runs.outputs import EvalOutputs, raw_samples
from objmtl.viz.draw import IGNORE_COLOR, class_color, draw_boxes, side_by_side

__all__ = ["EVAL_GROUPS", "DetectionOutputs", "ImageOutputs", "coco_results", "print_per_class", "render",
           "show_predictions", "write_results"]

EVAL_GROUPS: dict[str, tuple[str, ...]] = {"bbox": COCO_KEYS, "map": ("voc_map",), "recall": ("voc_recall",)}
"""``objmtl-test --eval`` groups (ObjectiveMTL's names) -> the metric names they print."""

ImageOutputs = dict[str, Any]
"""One image: ``image_id`` int, ``orig_size`` (h, w), ``boxes`` (N, 4) xyxy, ``scores``, ``labels``,
``gt_boxes`` (M, 4), ``gt_labels``, ``gt_ignore`` (M,) bool; numpy arrays in original pixels."""


class DetectionOutputs(EvalOutputs):
    """``--eval bbox|map|recall``, ``--out`` COCO results json, ``--show-dir`` pictures, per-class AP table."""

    task = "det"
    out_name = "det.json"  # inside a multi-task run's --out DIR
    eval_groups = EVAL_GROUPS
    default_groups = ("bbox",)

    def collect(self, outputs: Any, batch: dict[str, Any]) -> None:
        if not isinstance(outputs, dict) or "preds" not in outputs:
            return
        for pred, gt, target in zip(outputs["preds"], outputs["targets"], batch["targets"], strict=True):
            h, w = (int(v) for v in target["orig_size"])
            boxes = pred["boxes"].detach().float().cpu().numpy().reshape(-1, 4)
            boxes = np.clip(boxes, 0, [w, h, w, h])  # the clip at the input size, in float, can overshoot
            ignore = gt["iscrowd"].bool()
            if gt.get("difficult") is not None:
                ignore |= gt["difficult"].bool()
            self.items.append({
                "image_id": int(target["image_id"]), "orig_size": (h, w), "boxes": boxes,
                "scores": pred["scores"].detach().float().cpu().numpy().reshape(-1),
                "labels": pred["labels"].detach().cpu().numpy().astype(np.int64).reshape(-1),
                "gt_boxes": gt["boxes"].detach().float().cpu().numpy().reshape(-1, 4),
                "gt_labels": gt["labels"].detach().cpu().numpy().astype(np.int64).reshape(-1),
                "gt_ignore": ignore.cpu().numpy().reshape(-1)})

    def report(self, task: L.LightningModule, split: str) -> dict[str, Any]:
        return {"per_class": getattr(task, "per_class", {}).get(split, [])}

    def print_report(self, report: dict[str, Any]) -> None:
        print_per_class(report.get("per_class", []))

    def write(self, out: Path, *, meta: Meta, class_names: Sequence[str]) -> str:
        written = write_results(images=self.items, out=out, category_ids=meta.class_ids)
        return f"results: {written}" + ("" if meta.class_ids else " (category_id = class index of meta.json)")

    def show(self, out_dir: Path, *, roots: Sequence[Path], split: str, class_names: Sequence[str],
             score_thr: float) -> int:
        return show_predictions(images=self.items, roots=roots, split=split, out_dir=out_dir,
                                class_names=class_names, score_thr=score_thr)


def print_per_class(rows: Sequence[dict[str, Any]]) -> None:
    """Prints :meth:`~objmtl.metrics.detection.DetectionMetrics.per_class_table` rows as a rich table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="per-class AP", caption="AP: COCO, IoU .5:.95; AP50 and recall: VOC, IoU 0.5")
    for name, justify in (("class", "left"), ("gts", "right"), ("dets", "right"), ("AP", "right"),
                          ("AP50", "right"), ("recall", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        table.add_row(str(r["class"]), str(r["gts"]), str(r["dets"]), f"{r['ap']:.4f}", f"{r['ap50']:.4f}",
                      f"{r['recall']:.4f}")
    Console(width=120).print(table)


def coco_results(images: Sequence[ImageOutputs], *,
                 category_ids: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """COCO ``loadRes`` records of all detections: xywh in original pixels.

    ``category_ids[label]`` is written as the ``category_id`` (the source's ids); without it, the label.
    """
    out = []
    for im in images:
        for (x1, y1, x2, y2), score, label in zip(im["boxes"].tolist(), im["scores"].tolist(),
                                                  im["labels"].tolist(), strict=True):
            category = int(category_ids[label]) if category_ids else int(label)
            out.append({"image_id": im["image_id"], "category_id": category,
                        "bbox": [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)],
                        "score": round(float(score), 5)})
    return out


def write_results(*, images: Sequence[ImageOutputs], out: str | Path,
                  category_ids: Sequence[int] | None = None) -> Path:
    """Writes :func:`coco_results` of ``images`` as a json list to ``out``; returns the path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(coco_results(images, category_ids=category_ids)) + "\n")
    return out


def render(*, image: np.ndarray, outputs: ImageOutputs, class_names: Sequence[str],
           score_thr: float) -> np.ndarray:
    """Predictions (score >= ``score_thr``) beside ground truth on one original image."""
    keep = outputs["scores"] >= score_thr
    pred = draw_boxes(image, outputs["boxes"][keep], outputs["labels"][keep].tolist(),
                      class_names=class_names, scores=outputs["scores"][keep].tolist())
    gt_labels = outputs["gt_labels"].tolist()
    colors = [IGNORE_COLOR if ign else class_color(c) for c, ign in zip(gt_labels, outputs["gt_ignore"],
                                                                        strict=True)]
    gt = draw_boxes(image, outputs["gt_boxes"], gt_labels, class_names=class_names, colors=colors)
    return side_by_side([pred, gt], [f"prediction ({int(keep.sum())})", f"ground truth ({len(gt_labels)})"])


def show_predictions(*, images: Sequence[ImageOutputs], roots: Sequence[str | Path], split: str,
                     out_dir: str | Path, class_names: Sequence[str], score_thr: float = 0.3,
                     draw: Callable[..., np.ndarray] | None = None) -> int:
    """Writes ``out_dir/<image_id>.png`` (prediction beside ground truth) for each collected image.

    Args:
        images: the collected outputs (:attr:`DetectionOutputs.items`).
        roots: the shard sets evaluated (one, or each of ``data.sources`` in order).
        split: the split directory name that was evaluated (``test``, ...).
        out_dir: where the PNGs go (created).
        class_names: names by contiguous label.
        score_thr: the lowest score drawn.
        draw: ``(image=, outputs=, class_names=, score_thr=) -> picture``; default :func:`render` (boxes).

    Returns:
        The number of pictures written (images missing from the shards are skipped).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pending: dict[int, deque[ImageOutputs]] = defaultdict(deque)
    for im in images:
        pending[im["image_id"]].append(im)
    left, written = len(images), 0
    seen: dict[int, int] = defaultdict(int)
    for sample in raw_samples([Path(r) for r in roots], split):
        if left == 0:
            break
        image_id = sample_image_id(sample)
        size = tuple(sample["image"].shape[:2])
        queue = pending.get(image_id, deque())
        # ids shared across sources: the first of that id with this image's size
        outputs = next((o for o in queue if tuple(o["orig_size"]) == size), None)
        if outputs is None:
            continue
        queue.remove(outputs)
        left -= 1
        picture = (draw or render)(image=sample["image"], outputs=outputs, class_names=class_names,
                                   score_thr=score_thr)
        name = str(image_id) if not seen[image_id] else f"{image_id}_{seen[image_id]}"
        seen[image_id] += 1
        Image.fromarray(picture).save(out_dir / f"{name}.png")
        written += 1
    return written
