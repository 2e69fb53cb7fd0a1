"""``objmtl-predict`` on a multi-task model (checkpoint or ONNX): every head on every image.

Each head sees the image as its single-task export would (its own eval transform; pose: the whole image as
one person crop), so the graph runs once per head and that head's output group is decoded by the
single-task code (:func:`~objmtl.export.results.to_results`) under a per-head view of the metadata.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from objmtl.export.preprocess import Prepared, Preprocessor

__all__ = ["HeadRunner", "head_meta"]


def head_meta(meta: dict[str, Any], head: str) -> dict[str, Any]:
    """The metadata a single-task export of ``head`` would carry, from a multi-task file's."""
    return {**meta, "task": head, "class_names": list(meta.get("head_class_names", {}).get(head) or []),
            "eval_transform": meta["eval_transform"][head]}


class HeadRunner:
    """Runs a multi-task backend for each head on a list of images; returns per image ``{head: result}``."""

    def __init__(self, *, run: Callable[[Any], list[np.ndarray]], meta: dict[str, Any]) -> None:
        self.run, self.meta = run, meta
        self.heads: list[str] = list(meta["heads"])
        baked = bool(meta.get("normalization_baked"))
        fixed = None if meta.get("dynamic_size", True) else meta["input_size"]
        self.preps = {h: Preprocessor(eval_transform=meta["eval_transform"][h], task=h,
                                      baked=baked and h != "pose", uint8=meta.get("input_dtype") == "uint8",
                                      mean=meta["mean"], fixed_size=fixed if h != "pose" else None)
                      for h in self.heads}
        self.metas = {h: head_meta(meta, h) for h in self.heads}

    def _inputs(self, head: str, images: Sequence[np.ndarray], crops: Prepared | None) -> tuple[Any, Prepared]:
        if head == "pose":
            assert crops is not None
            whole = next((h for h in self.heads if h != "pose"), None)
            first = self.preps[whole](images).batch if whole else None
            return ((first, crops.batch) if first is not None else crops.batch), crops
        prepared = self.preps[head](images)
        return ((prepared.batch, crops.batch) if crops is not None else prepared.batch), prepared

    def __call__(self, images: Sequence[np.ndarray], *, top_k: int, score_thr: float) -> list[dict[str, Any]]:
        from objmtl.export.results import to_results

        crops = self.preps["pose"](images) if "pose" in self.heads else None
        rows: list[dict[str, Any]] = [{} for _ in images]
        for head in self.heads:
            batch, prepared = self._inputs(head, images, crops)
            outputs = self.run(batch)
            group = [int(name.split("__")[1]) for name in self.meta["heads"][head]]
            results = to_results([outputs[i] for i in group], meta=self.metas[head], prepared=prepared, top_k=top_k,
                                 score_thr=score_thr)
            for row, result in zip(rows, results, strict=True):
                row[head] = result
        return rows
