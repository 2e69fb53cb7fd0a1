"""Export and prediction of task kind ``det``.

Outputs, by ``--nms``: ``onnx`` (NMS in the graph): boxes [B, D, 4], scores [B, D], labels [B, D], detections
per image [B]; ``none``: per anchor box + class scores [B, A, 4 + K], for a serving stack's own NMS. Deformable
DETR predicts a set: the ``onnx`` layout, its top (query, class) pairs, no NMS.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torchvision.ops import batched_nms

from objmtl.errors import UserError
from objmtl.export.detr_graph import DetrGraph
from objmtl.export.export_kind import ExportKind
from objmtl.export.graphs import DetectorGraph, Normalize
from objmtl.export.preprocess import Prepared

__all__ = ["DetectionExport", "is_set_predictor"]

_OUTPUTS = {
    "none": ["per anchor: box xyxy (input pixels) + K class scores [B, A, 4 + K]"],
    "onnx": ["boxes xyxy (input pixels) [B, D, 4]", "scores [B, D]", "labels int64 [B, D] (-1: empty)",
             "detections per image int64 [B]"],
    "set": ["boxes xyxy (input pixels) [B, D, 4]", "scores [B, D]", "labels int64 [B, D]",
            "detections per image int64 [B] (= D: top (query, class) pairs, no NMS)"],
}


def is_set_predictor(model: nn.Module) -> bool:
    """Whether ``model`` predicts a set (Deformable DETR) rather than dense anchors and NMS."""
    from objmtl.models.detection import DeformableDETR

    return isinstance(model, DeformableDETR)


def _dense_nms(dense: np.ndarray, meta: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``nms=none`` layout [A, 4 + K] of one image -> boxes, scores, labels after the model's NMS."""
    boxes, scores = torch.from_numpy(dense[:, :4]), torch.from_numpy(dense[:, 4:])
    k = scores.shape[1]
    flat = scores.reshape(-1)
    keep = torch.nonzero(flat > float(meta["score_thresh"])).squeeze(1)
    anchor, label = torch.div(keep, k, rounding_mode="floor"), keep % k
    cand_boxes, cand_scores = boxes[anchor], flat[keep]
    kept = batched_nms(cand_boxes.float(), cand_scores.float(), label, float(meta["nms_thresh"]))
    kept = kept[: int(meta["max_detections"])]
    return cand_boxes[kept].numpy(), cand_scores[kept].numpy(), label[kept].numpy()


class DetectionExport(ExportKind):
    task = "det"
    pad = True
    outputs = _OUTPUTS["onnx"]

    @classmethod
    def head_graph(cls, model: nn.Module, *, normalize: Normalize, nms: str, module: dict[str, Any]) -> nn.Module:
        if is_set_predictor(model):
            if nms != "onnx":
                raise UserError(f"--nms {nms}: Deformable DETR predicts a set (no NMS to leave out); its one layout "
                                "is boxes, scores, labels, count (--nms onnx)")
            return DetrGraph(model=model, normalize=normalize).eval()
        return DetectorGraph(model=model, normalize=normalize, nms=nms).eval()

    @classmethod
    def num_outputs(cls, model: nn.Module, *, nms: str) -> int:
        return 4 if nms == "onnx" or is_set_predictor(model) else 1

    @classmethod
    def layout(cls, model: nn.Module, *, nms: str) -> dict[str, Any]:
        """``objmtl.nms`` and the settings a predictor's decoding uses, and the outputs' descriptions."""
        if is_set_predictor(model):
            return {"nms": "set", "score_thresh": 0.0, "max_detections": int(model.max_detections),
                    "outputs": _OUTPUTS["set"]}
        return {"nms": nms, "score_thresh": float(model.score_thresh), "nms_thresh": float(model.nms_thresh),
                "max_detections": int(model.max_detections), "outputs": _OUTPUTS[nms]}

    @classmethod
    def metadata(cls, exported: Any, *, nms: str) -> dict[str, Any]:
        return cls.layout(exported.model, nms=nms)

    @classmethod
    def output_axes(cls, exported: Any, *, names: Sequence[str], nms: str,
                    dynamic: bool) -> dict[str, dict[int, str]]:
        return {name: {0: "batch", **({1: "anchors"} if dynamic and nms == "none" else {})} for name in names}

    @classmethod
    def detection_outputs(cls, exported: Any, graph: nn.Module, *, names: Sequence[str],
                          nms: str) -> bool | list[list[str]]:
        return nms == "onnx"

    @classmethod
    def results(cls, outputs: Sequence[np.ndarray], *, meta: dict[str, Any], prepared: Prepared, top_k: int,
                score_thr: float) -> list[dict[str, Any]]:
        """Per image ``{"detections": [{"label", "class", "score", "box"}]}``: boxes xyxy in original pixels,
        scores >= ``score_thr``."""
        names = meta["class_names"]
        results = []
        for i, ((sy, sx), (h, w)) in enumerate(zip(prepared.scales, prepared.sizes, strict=True)):
            if meta.get("nms") == "none":
                boxes, scores, labels = _dense_nms(outputs[0][i], meta)
            else:
                n = int(outputs[3][i])
                boxes, scores, labels = outputs[0][i, :n], outputs[1][i, :n], outputs[2][i, :n]
            keep = scores >= score_thr
            boxes = boxes[keep] / np.array([sx, sy, sx, sy], dtype=np.float32)
            boxes = np.clip(boxes, 0, [w, h, w, h])
            results.append({"detections": [
                {"label": int(c), "class": names[int(c)], "score": float(s), "box": [float(v) for v in b]}
                for b, s, c in zip(boxes, scores[keep], labels[keep], strict=True)]})
        return results

    @classmethod
    def draw(cls, image: np.ndarray, result: dict[str, Any], meta: dict[str, Any], *,
             keypoint_thr: float = 0.2) -> np.ndarray:
        from objmtl.viz.draw import draw_boxes

        dets = result["detections"]
        return draw_boxes(image, np.array([d["box"] for d in dets]).reshape(-1, 4), [d["label"] for d in dets],
                          class_names=meta["class_names"], scores=[d["score"] for d in dets])
