"""Export and prediction of task kind ``reg``: one output, the values of each target [B, T] in source units."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from objmtl.export.export_kind import ExportKind
from objmtl.export.graphs import Normalize
from objmtl.export.preprocess import Prepared

__all__ = ["RegressionExport", "RegressionGraph"]


class RegressionGraph(nn.Module):
    """``OUTPUT__0``: ``model(x) * std + mean`` [B, T], the targets in the source's units."""

    def __init__(self, *, model: nn.Module, normalize: Normalize, mean: Sequence[float],
                 std: Sequence[float]) -> None:
        super().__init__()
        self.model, self.normalize = model, normalize
        self.register_buffer("mean", torch.tensor([float(m) for m in mean]).view(1, -1), persistent=False)
        self.register_buffer("std", torch.tensor([float(s) for s in std]).view(1, -1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(self.normalize(x)) * self.std + self.mean


class RegressionExport(ExportKind):
    task = "reg"
    outputs = ["target values [B, T] in the source's units (objmtl.target_names)"]

    @classmethod
    def plain_config(cls, part: Callable[[str], Any], *,
                     head_kinds: dict[str, type[ExportKind]] | None = None) -> dict[str, Any]:
        plain = super().plain_config(part, head_kinds=head_kinds)
        plain["task"]["module"].update({k: part(f"task.module.{k}")
                                        for k in ("target_names", "target_mean", "target_std")})
        return plain

    @classmethod
    def head_graph(cls, model: nn.Module, *, normalize: Normalize, nms: str, module: dict[str, Any]) -> nn.Module:
        return RegressionGraph(model=model, normalize=normalize, mean=module["target_mean"],
                               std=module["target_std"]).eval()

    @classmethod
    def metadata(cls, exported: Any, *, nms: str) -> dict[str, Any]:
        return {**super().metadata(exported, nms=nms),
                "target_names": [str(n) for n in exported.config["task"]["module"]["target_names"]]}

    @classmethod
    def results(cls, outputs: Sequence[np.ndarray], *, meta: dict[str, Any], prepared: Prepared, top_k: int,
                score_thr: float) -> list[dict[str, Any]]:
        """Per image ``{"values": {target name: value}}``."""
        names = meta["target_names"]
        return [{"values": {n: float(v) for n, v in zip(names, row, strict=True)}}
                for row in np.asarray(outputs[0], dtype=np.float64)]

    @classmethod
    def draw(cls, image: np.ndarray, result: dict[str, Any], meta: dict[str, Any], *,
             keypoint_thr: float = 0.2) -> np.ndarray:
        from objmtl.viz.draw import draw_label_text

        return draw_label_text(image, "  ".join(f"{n} {v:.3g}" for n, v in result["values"].items()))

    @classmethod
    def text_lines(cls, rows: Sequence[dict[str, Any]], meta: dict[str, Any]) -> list[str] | None:
        """``image  <value per target>`` per image, after a header line."""
        names = meta["target_names"]
        return ["image\t" + "\t".join(names),
                *(f"{r['image']}\t" + "\t".join(f"{r['values'][n]:.6g}" for n in names) for r in rows)]
