"""``objmtl-predict`` on a multi-task model (checkpoint or ONNX): every head on every image.

Each head sees the image as its single-task export would (its own eval transform; pose: the whole image as
one person crop), so the graph runs once per head and that head's output group is decoded by the
single-task code (its task kind's ``ExportKind.results``) under a per-head view of the metadata.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from objmtl.export.preprocess import Prepared

if TYPE_CHECKING:
    from objmtl.export.export_kind import ExportKind

__all__ = ["HeadRunner", "head_meta"]


def head_meta(meta: dict[str, Any], head: str) -> dict[str, Any]:
    """The metadata a single-task export of ``head`` would carry, from a multi-task file's."""
    return {**meta, "task": head, "kind": (meta.get("head_kinds") or {}).get(head),
            "class_names": list(meta.get("head_class_names", {}).get(head) or []),
            "eval_transform": meta["eval_transform"][head]}


class HeadRunner:
    """Runs a multi-task backend for each head on a list of images; returns per image ``{head: result}``.

    ``kinds``: head -> its task kind's export class (preprocessing and decoding); a head whose kind takes
    crops (pose) gets each whole image as one person, the others the whole images.
    """

    def __init__(self, *, run: Callable[[Any], list[np.ndarray]], meta: dict[str, Any],
                 kinds: dict[str, type[ExportKind]]) -> None:
        self.run, self.meta, self.kinds = run, meta, kinds
        self.heads: list[str] = list(meta["heads"])
        self.crop_heads = [h for h in self.heads if kinds[h].input == "crops"]
        self.metas = {h: head_meta(meta, h) for h in self.heads}
        baked = bool(meta.get("normalization_baked"))
        self.preps = {h: kinds[h].preprocessor(self.metas[h], baked=baked and h not in self.crop_heads,
                                               dynamic=True if h in self.crop_heads else None)
                      for h in self.heads}

    def _inputs(self, head: str, images: Sequence[np.ndarray], crops: Prepared | None) -> tuple[Any, Prepared]:
        if head in self.crop_heads:
            assert crops is not None
            whole = next((h for h in self.heads if h not in self.crop_heads), None)
            first = self.preps[whole](images).batch if whole else None
            return ((first, crops.batch) if first is not None else crops.batch), crops
        prepared = self.preps[head](images)
        return ((prepared.batch, crops.batch) if crops is not None else prepared.batch), prepared

    def __call__(self, images: Sequence[np.ndarray], *, top_k: int, score_thr: float) -> list[dict[str, Any]]:
        crops = self.preps[self.crop_heads[0]](images) if self.crop_heads else None
        rows: list[dict[str, Any]] = [{} for _ in images]
        for head in self.heads:
            batch, prepared = self._inputs(head, images, crops)
            outputs = self.run(batch)
            group = [int(name.split("__")[1]) for name in self.meta["heads"][head]]
            results = self.kinds[head].results([outputs[i] for i in group], meta=self.metas[head], prepared=prepared,
                                               top_k=top_k, score_thr=score_thr)
            for row, result in zip(rows, results, strict=True):
                row[head] = result
        return rows
