"""What ``objmtl-test`` writes for an instance segmentation run: COCO results with RLE masks, and pictures.

:class:`InstanceOutputs` keeps, per evaluated image, what :class:`~objmtl.tasks.instance.InstanceTask` returns
from its evaluation steps (original pixels; masks kept as compressed RLEs, so a test split costs kilobytes per
image, not megabytes). ``--out results.json`` writes COCO's segmentation results (``segmentation`` as an RLE
with ``counts`` as a string, ``score``, the source's ``category_id`` from ``meta.json``'s ``class_ids``) and, beside
it, ``results_bbox.json`` with the boxes: pycocotools scores each against the source json as it is (``segm``,
``bbox``) and gets objmtl's figures. ``--show-dir`` draws
each image's predicted masks (one colour per instance, with class name and score) beside the ground truth.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from objmtl.data.instance_masks import decode_rles, encode_masks
from objmtl.data.schema import Meta
from objmtl.metrics.instance import LOGGED
from objmtl.runs.det_outputs import DetectionOutputs, coco_results, show_predictions
from objmtl.viz.draw import IGNORE_COLOR, draw_boxes, draw_instance_masks, instance_colors, side_by_side

__all__ = ["EVAL_GROUPS", "InstanceOutputs", "instance_results", "render_instances"]

EVAL_GROUPS: dict[str, tuple[str, ...]] = {t: tuple(k for k in LOGGED if k.startswith(f"{t}_"))
                                           for t in ("segm", "bbox")}
"""``objmtl-test --eval segm bbox``: the mask figures, the box figures."""


def instance_results(images: Sequence[dict[str, Any]], *, category_ids: Sequence[int] | None = None
                     ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """COCO results of every prediction in COCO's own format, one list per IoU type: ``segm`` records
    ``{"image_id", "category_id", "segmentation" (RLE), "score"}`` and ``bbox`` records (as
    :func:`~objmtl.runs.det_outputs.coco_results`). Apart, because pycocotools' ``loadRes`` takes a detection's
    area from its ``bbox`` whenever a record has one, and the small / medium / large figures of ``segm`` would then
    be those of the boxes (COCO's own result format for segmentation has no box)."""
    bbox = coco_results(images, category_ids=category_ids)
    rles = [r for im in images for r in im["rles"]]
    segm = [{"image_id": b["image_id"], "category_id": b["category_id"], "segmentation": rle, "score": b["score"]}
            for b, rle in zip(bbox, rles, strict=True)]
    return segm, bbox


def render_instances(*, image: np.ndarray, outputs: dict[str, Any], class_names: Sequence[str],
                     score_thr: float) -> np.ndarray:
    """Predicted masks and boxes (score >= ``score_thr``) beside the ground truth's, on one original image."""
    h, w = image.shape[:2]
    keep = np.flatnonzero(outputs["scores"] >= score_thr)
    colors = instance_colors(len(keep))
    pred = draw_instance_masks(image, decode_rles([outputs["rles"][i] for i in keep], height=h, width=w),
                               colors=colors)
    pred = draw_boxes(pred, outputs["boxes"][keep], outputs["labels"][keep].tolist(), class_names=class_names,
                      scores=outputs["scores"][keep].tolist(), colors=colors)
    gt_labels = outputs["gt_labels"].tolist()
    gt_colors = [IGNORE_COLOR if ign else c for c, ign in zip(instance_colors(len(gt_labels)),
                                                               outputs["gt_ignore"], strict=True)]
    gt = draw_instance_masks(image, decode_rles(outputs["gt_rles"], height=h, width=w), colors=gt_colors)
    gt = draw_boxes(gt, outputs["gt_boxes"], gt_labels, class_names=class_names, colors=gt_colors)
    return side_by_side([pred, gt], [f"prediction ({len(keep)})", f"ground truth ({len(gt_labels)})"])


class InstanceOutputs(DetectionOutputs):
    """``--eval segm|bbox``, ``--out`` COCO results json with RLE masks, ``--show-dir`` pictures, per-class AP."""

    task = "inst"
    out_name = "inst.json"
    eval_groups = EVAL_GROUPS
    default_groups = ("segm", "bbox")

    def collect(self, outputs: Any, batch: dict[str, Any]) -> None:
        start = len(self.items)
        super().collect(outputs, batch)
        for item, pred, gt in zip(self.items[start:], outputs["preds"], outputs["targets"], strict=True):
            item["rles"] = encode_masks(pred["masks"].detach().cpu().numpy())
            item["gt_rles"] = encode_masks(gt["masks"].detach().cpu().numpy())

    def print_report(self, report: dict[str, Any]) -> None:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="per-class AP", caption="COCO, all areas: AP over IoU .5:.95, AP50 at IoU 0.5")
        for name in ("class", "gts", "mask AP", "mask AP50", "box AP", "box AP50"):
            table.add_column(name, justify="left" if name == "class" else "right")
        for r in report.get("per_class", []):
            table.add_row(str(r["class"]), str(r["gts"]), *(f"{r[k]:.4f}" for k in
                                                            ("segm_ap", "segm_ap50", "bbox_ap", "bbox_ap50")))
        Console(width=120).print(table)

    def write(self, out: Path, *, meta: Meta, class_names: Sequence[str]) -> str:
        import json

        segm, bbox = instance_results(self.items, category_ids=meta.class_ids)
        out.parent.mkdir(parents=True, exist_ok=True)
        boxes = out.with_name(f"{out.stem}_bbox{out.suffix or '.json'}")
        out.write_text(json.dumps(segm) + "\n")
        boxes.write_text(json.dumps(bbox) + "\n")
        ids = "" if meta.class_ids else " (category_id = class index of meta.json)"
        return f"results: {out} (segm: RLE masks), {boxes} (bbox){ids}"

    def show(self, out_dir: Path, *, roots: Sequence[Path], split: str, class_names: Sequence[str],
             score_thr: float) -> int:
        return show_predictions(images=self.items, roots=roots, split=split, out_dir=out_dir,
                                class_names=class_names, score_thr=score_thr, draw=render_instances)
