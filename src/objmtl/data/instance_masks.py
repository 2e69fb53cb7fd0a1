"""Per-instance masks from a sample's outlines: polygon rings or a COCO RLE, as COCO rasterises them.

An instance's outline is its ``polygons`` entry (a list of flat ``[x0, y0, x1, y1, ...]`` rings) or, from schema
version 2, its ``rle`` entry (a COCO RLE of the image's size: crowd regions and RLE objects). Both become one
compressed RLE at the image's size with faster-coco-eval's mask API (``frPyObjects`` + ``merge``: pycocotools'
rasteriser), so a mask used for training or evaluation covers exactly the pixels COCOeval would score.

What cannot be a mask is reported, never raised: a ring of fewer than 3 points (or with a non-finite
coordinate) is left out of its polygon; an instance with no usable ring or RLE, an RLE of another size than the
image, or an outline that covers no pixel gets no mask, and its reason is returned for the caller to count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["MaskProblem", "decode_rles", "encode_masks", "instance_rles"]

MaskProblem = str
"""Why an instance got no mask: ``no outline``, ``ring < 3 points``, ``rle size`` or ``zero area``."""


def _rle_of(outline_rings: Sequence[Any] | None, rle: dict[str, Any] | None, *, height: int, width: int
            ) -> tuple[dict[str, Any] | None, MaskProblem | None]:
    from faster_coco_eval.core import mask as cmask

    if rle is not None:
        size = [int(v) for v in rle.get("size", [])]
        if size != [height, width]:
            return None, "rle size"
        counts = rle.get("counts")
        out = cmask.frPyObjects(rle, height, width) if isinstance(counts, list) else dict(rle)
    else:
        rings = [list(map(float, r)) for r in (outline_rings or [])]
        good = [r for r in rings if len(r) >= 6 and len(r) % 2 == 0 and all(map(math.isfinite, r))]
        if not good:
            return None, "ring < 3 points" if rings else "no outline"
        out = cmask.merge(cmask.frPyObjects(good, height, width))
    if isinstance(out.get("counts"), bytes):
        out["counts"] = out["counts"].decode("ascii")
    if float(cmask.area(out)) <= 0:
        return None, "zero area"
    return out, None


def instance_rles(ann: dict[str, Any], *, height: int, width: int
                  ) -> tuple[list[dict[str, Any] | None], list[MaskProblem | None]]:
    """One compressed RLE (``{"size", "counts": str}``) per instance of ``ann``, or None with its reason.

    Args:
        ann: a sample's JSON: ``boxes`` and the optional parallel lists ``polygons`` and ``rle``; an instance's
            ``rle`` (not null) wins over its polygons.
        height: the image's height (the outlines are in its pixels).
        width: the image's width.

    Returns:
        ``(rles, problems)``, both one entry per box: ``problems[i]`` is None where ``rles[i]`` is a mask.
    """
    n = len(ann.get("boxes") or [])
    polygons = ann.get("polygons") or [None] * n
    rles = ann.get("rle") or [None] * n
    out: list[dict[str, Any] | None] = []
    problems: list[MaskProblem | None] = []
    for i in range(n):
        rings = polygons[i] if i < len(polygons) else None
        rle = rles[i] if i < len(rles) else None
        mask, problem = _rle_of(rings, rle if isinstance(rle, dict) else None, height=height, width=width)
        out.append(mask)
        problems.append(problem)
    return out, problems


def decode_rles(rles: Sequence[dict[str, Any]], *, height: int, width: int) -> np.ndarray:
    """RLEs -> uint8 masks (n, height, width), 1 inside."""
    from faster_coco_eval.core import mask as cmask

    if not rles:
        return np.zeros((0, height, width), np.uint8)
    return np.ascontiguousarray(np.moveaxis(cmask.decode(list(rles)), -1, 0)).astype(np.uint8)


def encode_masks(masks: np.ndarray) -> list[dict[str, Any]]:
    """Binary masks (n, h, w) -> compressed RLEs with ``counts`` as str (JSON-ready, COCO results format)."""
    from faster_coco_eval.core import mask as cmask

    if len(masks) == 0:
        return []
    rles = cmask.encode(np.asfortranarray(np.moveaxis(masks.astype(np.uint8), 0, -1)))
    for r in rles:
        r["counts"] = r["counts"].decode("ascii") if isinstance(r["counts"], bytes) else r["counts"]
    return list(rles)
