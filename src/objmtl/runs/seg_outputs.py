"""What ``objmtl-test`` writes for a segmentation run besides metrics: class-index PNGs and overlays.

:class:`SegmentationOutputs` (an :class:`~objmtl.runs.outputs.EvalOutputs`) keeps, per evaluated image,
the predicted class ids at the original size that :class:`~objmtl.tasks.segmentation.SegmentationTask`
returns from ``validation_step`` / ``test_step``, PNG-encoded (a few kB an image, so a large split
fits in memory). From those:

- ``--out DIR``: ``DIR/<image_id>.png`` (the shard key when a sample has no ``image_id``), single-channel
  PNGs whose pixel values are indices into ``meta.json``'s ``mask_classes``.
- ``--show-dir DIR``: ``DIR/<image_id>.png``, the prediction's colour overlay beside the ground truth's
  (ignore pixels hatched grey; a class 0 named background left uncoloured) on the original image,
  re-read from the split's shards (decode only) and matched to the outputs by key and size.
- ``--eval mIoU``: ``miou``, ``pixel_acc`` and ``macc``; the per-class IoU table is printed and kept in
  the metrics json (``per_class``).
"""

from __future__ import annotations

import io
from collections import defaultdict, deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from PIL import Image

from objmtl.data.browse import BACKGROUND_NAMES
from objmtl.data.schema import Meta
from objmtl.data.seg_samples import SegmentationSamples
from objmtl.errors import UserError
from objmtl.metrics.segmentation import SEG_KEYS
from objmtl.runs.outputs import EvalOutputs, raw_samples
from objmtl.viz.draw import draw_mask, side_by_side

__all__ = ["SegmentationOutputs", "print_per_class", "render"]


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im)


def _names(items: Sequence[dict[str, Any]]) -> list[str]:
    """File stems: the image id (the key without one), ``_1``, ``_2`` ... for repeats."""
    seen: dict[str, int] = defaultdict(int)
    out = []
    for it in items:
        stem = str(it["image_id"]) if it["image_id"] >= 0 else it["key"]
        out.append(stem if not seen[stem] else f"{stem}_{seen[stem]}")
        seen[stem] += 1
    return out


class SegmentationOutputs(EvalOutputs):
    """``--eval mIoU``, ``--out`` class-index PNGs, ``--show-dir`` overlays, per-class IoU table."""

    task = "seg"
    out_name = "seg"  # inside a multi-task run's --out DIR
    eval_groups = {"mIoU": SEG_KEYS}
    default_groups = ("mIoU",)
    out_help = "seg: a folder of class-index PNGs, IMAGE_ID.png, values index meta.json's mask_classes"

    def collect(self, outputs: Any, batch: dict[str, Any]) -> None:
        if not isinstance(outputs, dict) or "preds" not in outputs:
            return
        for pred, key, image_id in zip(outputs["preds"], outputs["keys"], outputs["image_ids"], strict=True):
            array = pred.detach().cpu().numpy()
            array = array.astype(np.uint8 if array.max(initial=0) < 256 else np.uint16)
            self.items.append({"key": str(key), "image_id": int(image_id), "size": array.shape, "png": _png(array)})

    def report(self, task: L.LightningModule, split: str) -> dict[str, Any]:
        return {"per_class": getattr(task, "per_class", {}).get(split, [])}

    def print_report(self, report: dict[str, Any]) -> None:
        print_per_class(report.get("per_class", []))

    def write(self, out: Path, *, meta: Meta, class_names: Sequence[str]) -> str:
        if out.suffix.lower() in (".json", ".txt", ".png") or out.is_file():
            raise UserError(f"--out {out}: task=seg writes one PNG per image; give a folder")
        out.mkdir(parents=True, exist_ok=True)
        for item, stem in zip(self.items, _names(self.items), strict=True):
            (out / f"{stem}.png").write_bytes(item["png"])
        return f"masks:   {len(self.items)} class-index PNGs in {out} (values index the {len(class_names)} mask classes)"

    def show(self, out_dir: Path, *, roots: Sequence[Path], split: str, class_names: Sequence[str],
             score_thr: float) -> int:
        out_dir.mkdir(parents=True, exist_ok=True)
        names = dict(zip((id(it) for it in self.items), _names(self.items), strict=True))
        pending: dict[str, deque[dict[str, Any]]] = defaultdict(deque)
        for it in self.items:
            pending[it["key"]].append(it)
        left, written = len(self.items), 0
        for sample in raw_samples([Path(r) for r in roots], split):
            if left == 0:
                break
            queue = pending.get(str(sample["key"]), deque())
            item = next((it for it in queue if tuple(it["size"]) == sample["image"].shape[:2]), None)
            if item is None:
                continue
            queue.remove(item)
            left -= 1
            gt, _ = SegmentationSamples.mask_of(sample)
            picture = render(image=sample["image"], pred=_decode(item["png"]), gt=gt, class_names=class_names)
            Image.fromarray(picture).save(out_dir / f"{names[id(item)]}.png")
            written += 1
        return written


def render(*, image: np.ndarray, pred: np.ndarray, gt: np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    """The prediction's overlay beside the ground truth's on one original image (H x W x 3 uint8)."""
    background = 0 if class_names and class_names[0].lower() in BACKGROUND_NAMES else None
    return side_by_side([draw_mask(image, pred, background_index=background),
                         draw_mask(image, gt, background_index=background)], ["prediction", "ground truth"])


def print_per_class(rows: Sequence[dict[str, Any]]) -> None:
    """Prints the per-class IoU rows of the classes present in ground truth or prediction as a rich table."""
    from rich.console import Console
    from rich.table import Table

    shown = [r for r in rows if r["iou"] is not None]
    absent = len(rows) - len(shown)
    table = Table(title="per-class IoU",
                  caption=f"{absent} classes absent from ground truth and prediction: not shown, not in mIoU"
                  if absent else None)
    for name, justify in (("class", "left"), ("IoU", "right"), ("acc", "right"), ("gt px", "right"),
                          ("pred px", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for r in shown:
        table.add_row(str(r["class"]), f"{r['iou']:.4f}", "-" if r["acc"] is None else f"{r['acc']:.4f}",
                      str(r["gt_pixels"]), str(r["pred_pixels"]))
    Console(width=120).print(table)
