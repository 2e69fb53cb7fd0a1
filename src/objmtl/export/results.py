"""Graph outputs -> per-image results in original pixels; the same code for PyTorch and ONNX Runtime.

Both inference paths of ``objmtl-predict`` run the graphs of :mod:`objmtl.export.graphs` (eagerly
in PyTorch, or exported in onnxruntime) and hand the outputs, as numpy arrays, to
:func:`to_results` with the export metadata (:func:`objmtl.export.metadata.read_metadata`), which
hands them to the task kind's decoding (``ExportKind.results``: :mod:`objmtl.export.cls_export`, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from objmtl.export.export_kind import meta_kind
from objmtl.export.preprocess import Prepared

__all__ = ["draw_result", "to_results"]


def to_results(outputs: Sequence[np.ndarray], *, meta: dict[str, Any], prepared: Prepared, top_k: int = 5,
               score_thr: float = 0.3) -> list[dict[str, Any]]:
    """Per image: ``{"label", "class", "score", "top"}`` (cls), ``{"detections": [...]}`` (det, boxes xyxy
    in original pixels, scores >= ``score_thr``), ``{"mask": H x W uint8, "classes": {name: fraction}}``
    (seg, original size) or ``{"keypoints": K x [x, y, confidence], "score"}`` (pose: the whole image
    as one person, original pixels); as the file's task kind decodes them."""
    return meta_kind(meta).results(outputs, meta=meta, prepared=prepared, top_k=top_k, score_thr=score_thr)


def draw_result(image: np.ndarray, result: dict[str, Any], meta: dict[str, Any], *,
                keypoint_thr: float = 0.2) -> np.ndarray:
    """One image's :func:`to_results` entry drawn on it (boxes, mask overlay, skeleton or class caption)."""
    return meta_kind(meta).draw(image, result, meta, keypoint_thr=keypoint_thr)
