"""Graph outputs -> per-image results in original pixels; the same code for PyTorch and ONNX Runtime.

Both inference paths of ``objmtl-predict`` run the graphs of :mod:`objmtl.export.graphs` (eagerly
in PyTorch, or exported in onnxruntime) and hand the outputs, as numpy arrays, to
:func:`to_results` with the export metadata (:func:`objmtl.export.metadata.read_metadata`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torchvision.ops import batched_nms

from objmtl.export.preprocess import Prepared

__all__ = ["to_results"]


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _classification(outputs: Sequence[np.ndarray], meta: dict[str, Any], top_k: int) -> list[dict[str, Any]]:
    probs = _softmax(outputs[0].astype(np.float64))
    names = meta["class_names"]
    results = []
    for p in probs:
        order = np.argsort(-p)[: max(1, min(top_k, len(p)))]
        results.append({"label": int(order[0]), "class": names[int(order[0])], "score": float(p[order[0]]),
                        "top": [{"label": int(i), "class": names[int(i)], "score": float(p[i])} for i in order]})
    return results


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


def _detection(outputs: Sequence[np.ndarray], meta: dict[str, Any], prepared: Prepared,
               score_thr: float) -> list[dict[str, Any]]:
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


def to_results(outputs: Sequence[np.ndarray], *, meta: dict[str, Any], prepared: Prepared, top_k: int = 5,
               score_thr: float = 0.3) -> list[dict[str, Any]]:
    """Per image: ``{"label", "class", "score", "top"}`` (cls) or ``{"detections": [...]}`` (det, boxes xyxy
    in original pixels, scores >= ``score_thr``)."""
    task = meta["task"]
    if task == "cls":
        return _classification(outputs, meta, top_k)
    if task == "det":
        return _detection(outputs, meta, prepared, score_thr)
    raise ValueError(f"task={task}: no result decoding")
