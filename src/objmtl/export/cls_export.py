"""Export and prediction of task kind ``cls``: one output, class logits [B, K]."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import nn

from objmtl.export.export_kind import ExportKind
from objmtl.export.graphs import ClassifierGraph, Normalize
from objmtl.export.preprocess import Prepared

__all__ = ["ClassificationExport"]


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class ClassificationExport(ExportKind):
    task = "cls"
    outputs = ["class logits [B, K]"]

    @classmethod
    def head_graph(cls, model: nn.Module, *, normalize: Normalize, nms: str, module: dict[str, Any]) -> nn.Module:
        return ClassifierGraph(model=model, normalize=normalize).eval()

    @classmethod
    def results(cls, outputs: Sequence[np.ndarray], *, meta: dict[str, Any], prepared: Prepared, top_k: int,
                score_thr: float) -> list[dict[str, Any]]:
        """Per image ``{"label", "class", "score", "top"}`` (the ``top_k`` most likely classes)."""
        probs = _softmax(outputs[0].astype(np.float64))
        names = meta["class_names"]
        results = []
        for p in probs:
            order = np.argsort(-p)[: max(1, min(top_k, len(p)))]
            results.append({"label": int(order[0]), "class": names[int(order[0])], "score": float(p[order[0]]),
                            "top": [{"label": int(i), "class": names[int(i)], "score": float(p[i])} for i in order]})
        return results

    @classmethod
    def draw(cls, image: np.ndarray, result: dict[str, Any], meta: dict[str, Any], *,
             keypoint_thr: float = 0.2) -> np.ndarray:
        from objmtl.viz.draw import draw_label_text

        return draw_label_text(image, f"{result['class']} {result['score']:.2f}")

    @classmethod
    def text_lines(cls, rows: Sequence[dict[str, Any]], meta: dict[str, Any]) -> list[str] | None:
        """``name  class  score`` per image (ObjectiveMTL's ``cls_infer_to_txt``)."""
        return [f"{r['image']}\t{r['class']}\t{r['score']:.6f}" for r in rows]
