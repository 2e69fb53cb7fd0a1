"""Export and prediction of task kind ``pose``: person crops in, keypoint heatmaps [B, K, H / 4, W / 4] out.

A predictor takes each whole image as one person (the run's ``TopDownCrop``) and maps the decoded keypoints
back to the image's pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from objmtl.errors import UserError
from objmtl.export.export_kind import ExportKind
from objmtl.export.graphs import Normalize, PoseGraph
from objmtl.export.preprocess import Prepared

__all__ = ["PoseExport"]


def flip_pairs(module: dict[str, Any]) -> list[list[int]] | None:
    """The keypoint pairs a flip test swaps (``task.module``), or None when the run does not flip-test."""
    if module.get("flip_test") is False:
        return None
    return list((module.get("keypoints") or {}).get("flip_pairs") or [])


class PoseExport(ExportKind):
    task = "pose"
    input = "crops"
    outputs = ["keypoint heatmaps [B, K, H / 4, W / 4] of person crops"]

    @classmethod
    def graph(cls, exported: Any, *, normalize: Normalize, bake_norm: bool, nms: str) -> nn.Module:
        if bake_norm:
            raise UserError("--bake-norm: not offered for pose (its crops are normalised by the crop transform)")
        return super().graph(exported, normalize=normalize, bake_norm=bake_norm, nms=nms)

    @classmethod
    def head_graph(cls, model: nn.Module, *, normalize: Normalize, nms: str, module: dict[str, Any]) -> nn.Module:
        return PoseGraph(model=model, normalize=normalize, flip_pairs=flip_pairs(module)).eval()

    @classmethod
    def metadata(cls, exported: Any, *, nms: str) -> dict[str, Any]:
        module = exported.config["task"]["module"]
        return {**super().metadata(exported, nms=nms), "keypoints": module.get("keypoints", {}),
                "flip_test": module.get("flip_test") is not False}

    @classmethod
    def results(cls, outputs: Sequence[np.ndarray], *, meta: dict[str, Any], prepared: Prepared, top_k: int,
                score_thr: float) -> list[dict[str, Any]]:
        """Per image ``{"keypoints": K x [x, y, confidence] in original pixels, "score"}``."""
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
            results.append({"keypoints": [[float(x), float(y), float(c)]
                                          for (x, y), c in zip(points, scores, strict=True)],
                            "score": float(scores.mean()) if len(scores) else 0.0})
        return results

    @classmethod
    def draw(cls, image: np.ndarray, result: dict[str, Any], meta: dict[str, Any], *,
             keypoint_thr: float = 0.2) -> np.ndarray:
        from objmtl.viz.draw import draw_keypoints

        kps = np.array([[x, y, 2.0 if c >= keypoint_thr else 0.0] for x, y, c in result["keypoints"]])
        return draw_keypoints(image, kps[None], skeleton=meta.get("keypoints", {}).get("skeleton") or ())
