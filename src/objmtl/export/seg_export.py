"""Export and prediction of task kind ``seg``: one output, class logits at the input size [B, K, H, W]."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from objmtl.export.export_kind import ExportKind
from objmtl.export.graphs import Normalize, SegmenterGraph
from objmtl.export.preprocess import Prepared

__all__ = ["SegmentationExport"]


class SegmentationExport(ExportKind):
    task = "seg"
    pad = True
    outputs = ["class logits at the input size [B, K, H, W]"]

    @classmethod
    def head_graph(cls, model: nn.Module, *, normalize: Normalize, nms: str, module: dict[str, Any]) -> nn.Module:
        return SegmenterGraph(model=model, normalize=normalize).eval()

    @classmethod
    def metadata(cls, exported: Any, *, nms: str) -> dict[str, Any]:
        meta = super().metadata(exported, nms=nms)
        if exported.config["task"]["module"].get("inference") == "slide":
            meta["note"] = "the run evaluates with sliding windows; this graph runs the whole image at once"
            print(f"note: {meta['note']}")
        return meta

    @classmethod
    def results(cls, outputs: Sequence[np.ndarray], *, meta: dict[str, Any], prepared: Prepared, top_k: int,
                score_thr: float) -> list[dict[str, Any]]:
        """Per image ``{"mask": H x W uint8 at the original size, "classes": {name: fraction of pixels}}``."""
        names = meta["class_names"]
        results = []
        for i, ((vh, vw), (h, w)) in enumerate(zip(prepared.valid, prepared.sizes, strict=True)):
            logits = torch.from_numpy(np.ascontiguousarray(outputs[0][i : i + 1, :, :vh, :vw])).float()
            mask = torch.nn.functional.interpolate(logits, size=(int(h), int(w)), mode="bilinear",
                                                   align_corners=False).argmax(1)[0].numpy().astype(np.uint8)
            ids, counts = np.unique(mask, return_counts=True)
            results.append({"mask": mask, "classes": {names[int(c)]: round(float(n) / mask.size, 5)
                                                      for c, n in zip(ids, counts, strict=True)}})
        return results

    @classmethod
    def draw(cls, image: np.ndarray, result: dict[str, Any], meta: dict[str, Any], *,
             keypoint_thr: float = 0.2) -> np.ndarray:
        from objmtl.viz.draw import draw_mask

        background = 0 if meta["class_names"][:1] == ["background"] else None
        return draw_mask(image, result["mask"], background_index=background)
