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

__all__ = ["draw_result", "to_results"]


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


def _segmentation(outputs: Sequence[np.ndarray], meta: dict[str, Any], prepared: Prepared) -> list[dict[str, Any]]:
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


def _pose(outputs: Sequence[np.ndarray], meta: dict[str, Any], prepared: Prepared) -> list[dict[str, Any]]:
    from objmtl.geometry.affine import apply_affine, from_heatmap
    from objmtl.geometry.heatmaps import decode_heatmaps

    heatmaps = torch.from_numpy(np.ascontiguousarray(outputs[0])).float()
    coords, maxvals = decode_heatmaps(heatmaps, method="dark")
    stride = prepared.batch.shape[2] / heatmaps.shape[2]
    results = []
    assert prepared.inv_affines is not None
    for i, inverse in enumerate(prepared.inv_affines):
        points = apply_affine(from_heatmap(coords[i].numpy().astype(np.float64), stride), inverse)
        scores = maxvals[i].numpy()
        results.append({"keypoints": [[float(x), float(y), float(c)] for (x, y), c in zip(points, scores, strict=True)],
                        "score": float(scores.mean()) if len(scores) else 0.0})
    return results


def to_results(outputs: Sequence[np.ndarray], *, meta: dict[str, Any], prepared: Prepared, top_k: int = 5,
               score_thr: float = 0.3) -> list[dict[str, Any]]:
    """Per image: ``{"label", "class", "score", "top"}`` (cls), ``{"detections": [...]}`` (det, boxes xyxy
    in original pixels, scores >= ``score_thr``), ``{"mask": H x W uint8, "classes": {name: fraction}}``
    (seg, original size) or ``{"keypoints": K x [x, y, confidence], "score"}`` (pose: the whole image
    as one person, original pixels)."""
    task = meta["task"]
    if task == "cls":
        return _classification(outputs, meta, top_k)
    if task == "det":
        return _detection(outputs, meta, prepared, score_thr)
    if task == "seg":
        return _segmentation(outputs, meta, prepared)
    if task == "pose":
        return _pose(outputs, meta, prepared)
    raise ValueError(f"task={task}: no result decoding")


def draw_result(image: np.ndarray, result: dict[str, Any], meta: dict[str, Any], *,
                keypoint_thr: float = 0.2) -> np.ndarray:
    """One image's :func:`to_results` entry drawn on it (boxes, mask overlay, skeleton or class caption)."""
    from objmtl.viz.draw import draw_boxes, draw_keypoints, draw_label_text, draw_mask

    task = meta["task"]
    if task == "det":
        dets = result["detections"]
        return draw_boxes(image, np.array([d["box"] for d in dets]).reshape(-1, 4), [d["label"] for d in dets],
                          class_names=meta["class_names"], scores=[d["score"] for d in dets])
    if task == "seg":
        background = 0 if meta["class_names"][:1] == ["background"] else None
        return draw_mask(image, result["mask"], background_index=background)
    if task == "pose":
        kps = np.array([[x, y, 2.0 if c >= keypoint_thr else 0.0] for x, y, c in result["keypoints"]])
        return draw_keypoints(image, kps[None], skeleton=meta.get("keypoints", {}).get("skeleton") or ())
    return draw_label_text(image, f"{result['class']} {result['score']:.2f}")
