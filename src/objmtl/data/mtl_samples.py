"""``task=mtl`` samples: each head's view of a sample, for the heads whose annotations the sample carries.

A sample goes to head ``cls`` when it has a ``label``, ``det`` when it has ``boxes`` (an empty list is an
annotated image without objects), ``seg`` when it has a mask or polygons, ``pose`` when it has
``keypoints``; and only to the kinds its source lends (``data.sources[i].tasks``, see
:class:`~objmtl.data.mixing.MixedDataset`). Each head's adapter (the single-task one, with that head's
transform) makes its item; a batch is ``{head: that head's collated batch}`` for the heads present in it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from objmtl.data.cls_samples import ClassificationSamples
from objmtl.data.det_samples import DetectionSamples
from objmtl.data.pose_samples import PoseSamples
from objmtl.data.seg_samples import SegmentationSamples
from objmtl.errors import UserError

__all__ = ["MultiTaskSamples", "carries"]


def carries(sample: dict[str, Any], kind: str) -> bool:
    """Whether ``sample`` holds the annotations head ``kind`` trains on (and its source lends them)."""
    lent = sample.get("kinds")
    if lent is not None and kind not in lent:
        return False
    ann = sample["ann"]
    if kind == "cls":
        return ann.get("label") is not None
    if kind == "det":
        return ann.get("boxes") is not None
    if kind == "seg":
        return sample.get("mask") is not None or bool(ann.get("polygons"))
    if kind == "pose":
        return ann.get("keypoints") is not None
    raise UserError(f"task.heads: unknown head {kind!r}")


def _adapters() -> dict[str, type]:
    return {"cls": ClassificationSamples, "det": DetectionSamples, "seg": SegmentationSamples, "pose": PoseSamples}


class MultiTaskSamples:
    """Routes a decoded sample to the adapters of the heads it has annotations for.

    Args:
        transform: head -> its albumentations pipeline (or ``TopDownCrop`` for pose), as in that head's
            single-task data config.
        heads: the heads trained (default: every key of ``transform``); a head missing from
            ``transform`` gets its adapter's default (images scaled to [0, 1]).

    Returns (per sample): ``{"heads": {head: item}, "key": str}``; :meth:`collate` gives
    ``{head: batch}``, ``"samples"``: how many samples the batch holds, and ``"unused"``: how many of them no
    head trains on.
    """

    task = "mtl"
    meta_task = None  # any annotation kinds; ShardDataModule checks the heads one by one
    needs: tuple[str, ...] = ()

    def __init__(self, *, transform: dict[str, Callable[..., Any]] | None = None,
                 heads: Sequence[str] | None = None) -> None:
        transform = dict(transform or {})
        self.heads = list(heads) if heads is not None else list(transform)
        adapters = _adapters()
        unknown = [h for h in self.heads if h not in adapters]
        if unknown or not self.heads:
            raise UserError(f"task.heads={self.heads}: pick one or more of {', '.join(adapters)}")
        self.adapters = {h: adapters[h](transform=transform.get(h)) for h in self.heads}

    def reseed(self, seed: int) -> None:
        for i, adapter in enumerate(self.adapters.values()):
            if hasattr(adapter, "reseed"):
                adapter.reseed(seed + 7919 * i)

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        items = {h: a(sample) for h, a in self.adapters.items() if carries(sample, h)}
        return {"heads": items, "key": str(sample.get("key", ""))}

    @staticmethod
    def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
        adapters = _adapters()
        # samples that carry none of the trained heads' annotations: counted (data/unused_samples), not trained on
        out: dict[str, Any] = {"samples": len(batch), "unused": sum(1 for b in batch if not b["heads"])}
        for head, adapter in adapters.items():
            items = [b["heads"][head] for b in batch if head in b["heads"]]
            if items:
                out[head] = adapter.collate(items)
        return out
