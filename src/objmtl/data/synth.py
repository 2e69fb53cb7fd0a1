"""The embedded default data set: coloured shapes on noisy backgrounds, with every annotation kind.

Each image holds 1 to 4 shapes (one dominant, clearly larger) and carries at once an image
``label`` (the class with the most visible pixels), instance boxes / polygons / areas, four
keypoints per instance (the top, right, bottom and left extreme points) and a semantic mask.
Sample ``i`` depends only on ``(seed, i)``, so a shard set is byte-identical for the same arguments.

Coordinates: a vertex at ``(x, y)`` is drawn by ``PIL.ImageDraw.polygon``, which fills the pixels
``floor(x0)..floor(x1)`` of an extent ``[x0, x1]``; boxes are the polygon's full (amodal) extent.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from objmtl.data.schema import KeypointSpec, Meta
from objmtl.data.shard_writer import ShardSetWriter
from objmtl.errors import UserError

__all__ = ["SYNTH_CLASSES", "render_sample", "synth_meta", "write_synthetic"]

SYNTH_CLASSES = ("circle", "square", "triangle", "diamond")
_CIRCLE_SIDES = 32  # a multiple of 4, starting at the top: the four extreme points are vertices
_DOMINANT_SIZE = (0.35, 0.60)  # extent as a fraction of the image side
_SMALL_SIZE = (0.10, 0.25)
_MAX_COVER = 0.4  # at most this fraction of any box may lie under the other boxes
_PLACE_TRIES = 30


def synth_meta() -> Meta:
    """The shard-set description of the synthetic data (without splits).

    Returns:
        A :class:`Meta` for classification, detection, segmentation and pose on ``SYNTH_CLASSES``.
    """
    # OKS sigmas: the extreme points are geometrically exact (sharper than COCO's body joints,
    # 0.025-0.107), but on 13-77 px shapes rasterisation alone moves them by ~1 px, i.e. 2-8 % of
    # the object scale, and along a circle's tangent they are ill-defined: 0.05 is a fair middle.
    return Meta(
        classes=list(SYNTH_CLASSES),
        tasks=["cls", "det", "seg", "pose", "inst"],
        mask_classes=["background", *SYNTH_CLASSES],
        keypoints=KeypointSpec(names=["top", "right", "bottom", "left"],
                               skeleton=[[0, 1], [1, 2], [2, 3], [3, 0]],
                               flip_pairs=[[1, 3]], sigmas=[0.05] * 4),
        source="synth",
    )


def _polygon(cls: int, cx: float, cy: float, h: float, flip: bool) -> np.ndarray:
    """Vertices (V x 2) of a shape of class ``cls`` centred at (cx, cy) with half-extent h."""
    if cls == 0:
        t = -math.pi / 2 + 2 * math.pi * np.arange(_CIRCLE_SIDES) / _CIRCLE_SIDES
        pts = np.stack([cx + h * np.cos(t), cy + h * np.sin(t)], axis=1)
    elif cls == 1:
        pts = np.array([[-h, -h], [h, -h], [h, h], [-h, h]]) + (cx, cy)
    elif cls == 2:
        pts = np.array([[0, -h], [h, h], [-h, h]]) + (cx, cy)
        if flip:  # pointing down
            pts = np.array([[-h, -h], [h, -h], [0, h]]) + (cx, cy)
    else:
        pts = np.array([[0, -h], [h, 0], [0, h], [-h, 0]]) + (cx, cy)
    return np.round(pts, 2)


def _extremes(pts: np.ndarray) -> list[tuple[float, float]]:
    """Top, right, bottom, left extreme points; a tied edge (e.g. a square's top) gives its middle."""
    out = []
    for axis, sign in ((1, -1), (0, 1), (1, 1), (0, -1)):
        v = sign * pts[:, axis]
        tied = pts[v >= v.max() - 1e-6]
        out.append((round(float(tied[:, 0].mean()), 2), round(float(tied[:, 1].mean()), 2)))
    return out


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A low-frequency random colour field, sometimes with stripes (float32, H x W x 3)."""
    # textured but quieter than the shapes: a base colour +-50 per channel, stripes of +-25
    g = int(rng.integers(2, 6))
    field = np.clip(rng.uniform(50, 205, 3) + rng.uniform(-50, 50, (g, g, 3)), 0, 255).astype(np.uint8)
    bg = np.asarray(Image.fromarray(field).resize((size, size), Image.Resampling.BILINEAR), np.float32)
    if rng.random() < 0.5:
        angle, cycles = rng.uniform(0, math.pi), rng.uniform(2, 8)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
        wave = np.sin(2 * math.pi * cycles * (xx * math.cos(angle) + yy * math.sin(angle)) + rng.uniform(0, 6.3))
        bg = bg + wave[..., None] * rng.uniform(-25, 25, 3).astype(np.float32)
    return bg


def _colour(rng: np.random.Generator, bg_mean: np.ndarray, others: list[np.ndarray]) -> np.ndarray:
    """A random colour far from the local background (and, if possible, from the other shapes)."""
    cand = rng.integers(0, 256, (16, 3)).astype(np.float32)
    score = np.linalg.norm(cand - bg_mean, axis=1) / 120
    for o in others:
        score = np.minimum(score, np.linalg.norm(cand - o, axis=1) / 60)
    ok = np.flatnonzero(score >= 1)
    return cand[ok[0] if ok.size else int(score.argmax())]


def _place(rng: np.random.Generator, size: int, extent: float,
           boxes: list[np.ndarray], cover: list[float]) -> np.ndarray | None:
    """A box of side ``extent`` inside the image that keeps every box <= _MAX_COVER covered, or None."""
    h = extent / 2
    for _ in range(_PLACE_TRIES):
        cx, cy = rng.uniform(1 + h, size - 2 - h, 2)
        box = np.array([cx - h, cy - h, cx + h, cy + h])
        inter = [max(0.0, min(box[2], b[2]) - max(box[0], b[0])) * max(0.0, min(box[3], b[3]) - max(box[1], b[1]))
                 for b in boxes]
        area = [(b[2] - b[0]) * (b[3] - b[1]) for b in boxes]
        if sum(inter) <= _MAX_COVER * extent**2 and all(
                c + i / a <= _MAX_COVER for c, i, a in zip(cover, inter, area, strict=True)):
            for j, (i, a) in enumerate(zip(inter, area, strict=True)):
                cover[j] += i / a
            cover.append(sum(inter) / extent**2)
            boxes.append(box)
            return box
    return None


def render_sample(index: int, *, seed: int, image_size: int) -> tuple[np.ndarray, dict[str, Any], np.ndarray]:
    """Renders sample ``index`` from ``np.random.default_rng([seed, index])`` alone.

    Args:
        index: global sample index (also the ``image_id``).
        seed: data set seed.
        image_size: side of the square image in pixels.

    Returns:
        ``(image, ann, mask)``: the H x W x 3 uint8 RGB image, the annotation dict per the schema
        (instances in drawing order: later ones occlude earlier ones) and the H x W uint8 semantic
        mask (0 = background, class index + 1 on shape pixels).
    """
    rng = np.random.default_rng([seed, index])
    size = image_size
    bg = _background(rng, size)
    n_obj = int(rng.integers(1, 5))
    boxes: list[np.ndarray] = []
    cover: list[float] = []
    shapes = []  # (class, polygon) in placement order; the dominant one first so it always fits
    for k in range(n_obj):
        lo, hi = _DOMINANT_SIZE if k == 0 else _SMALL_SIZE
        cls = int(rng.integers(len(SYNTH_CLASSES)))
        box = _place(rng, size, rng.uniform(lo, hi) * size, boxes, cover)
        if box is not None:
            cx, cy = (box[:2] + box[2:]) / 2
            shapes.append((cls, _polygon(cls, cx, cy, (box[2] - box[0]) / 2, bool(rng.random() < 0.5))))
    shapes = [shapes[i] for i in rng.permutation(len(shapes))]

    inst_img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(inst_img)
    colours = np.zeros((len(shapes) + 1, 3), np.float32)
    for i, (_, pts) in enumerate(shapes):
        draw.polygon(pts.ravel().tolist(), fill=i + 1)
        x0, y0 = np.floor(pts.min(0)).astype(int)
        x1, y1 = np.floor(pts.max(0)).astype(int)
        colours[i + 1] = _colour(rng, bg[y0:y1 + 1, x0:x1 + 1].mean((0, 1)), list(colours[1:i + 1]))
    inst = np.asarray(inst_img)
    cls_lut = np.array([0] + [c + 1 for c, _ in shapes], np.uint8)
    mask = cls_lut[inst]

    fg = inst[..., None] > 0
    img = np.where(fg, colours[inst], bg)
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(rng.uniform(3, 15))
    image = np.clip(img, 0, 255).astype(np.uint8)

    areas = np.bincount(inst.ravel(), minlength=len(shapes) + 1)
    pixels = np.bincount(mask.ravel(), minlength=len(SYNTH_CLASSES) + 1)[1:]
    ann: dict[str, Any] = {"label": int(pixels.argmax())}
    inst_keys = ("boxes", "classes", "iscrowd", "area", "difficult", "truncated", "polygons", "keypoints")
    ann.update({k: [] for k in inst_keys})
    for i, (cls, pts) in enumerate(shapes):
        if areas[i + 1] == 0:  # fully hidden: no pixel refers to it, so dropping it stays consistent
            continue
        kps = []
        for x, y in _extremes(pts):
            px, py = min(int(x), size - 1), min(int(y), size - 1)
            seen = (inst[max(py - 1, 0):py + 2, max(px - 1, 0):px + 2] == i + 1).any()
            kps.append([x, y, 2 if seen else 1])
        ann["boxes"].append([float(v) for v in (*pts.min(0), *pts.max(0))])
        ann["classes"].append(cls)
        ann["area"].append(int(areas[i + 1]))
        ann["polygons"].append([[float(v) for v in pts.ravel()]])
        ann["keypoints"].append(kps)
        for key in ("iscrowd", "difficult", "truncated"):
            ann[key].append(0)
    ann.update(image_id=index, width=size, height=size, source="synth")
    return image, ann, mask


def _encode(array: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        Image.fromarray(array).save(buf, format="JPEG", quality=90)
    else:
        Image.fromarray(array).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def write_synthetic(out: str | Path, *, n: int = 1000, seed: int = 0, image_size: int = 128,
                    val_fraction: float = 0.2, test_fraction: float = 0.1, max_count: int = 256,
                    overwrite: bool = False, progress: bool = False) -> Meta:
    """Writes ``n`` synthetic samples as a shard set at ``out``.

    Samples ``0..n_train-1`` go to ``train``, then ``val``, then ``test``, with
    ``n_val = round(n * val_fraction)`` and ``n_test = round(n * test_fraction)``.

    Args:
        out: the shard-set folder to create (written atomically).
        n: total number of samples.
        seed: data set seed; the output bytes depend only on the arguments.
        image_size: side of the square images in pixels (at least 32).
        val_fraction: fraction of samples in ``val``.
        test_fraction: fraction of samples in ``test``.
        max_count: samples per tar file.
        overwrite: replace ``out`` if it exists.
        progress: show a tqdm progress bar.

    Returns:
        The written :class:`Meta`, with its splits.

    Raises:
        UserError: on a bad argument or an existing ``out`` without ``overwrite``.
    """
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    n_train = n - n_val - n_test
    if n < 1 or image_size < 32 or max_count < 1 or min(n_val, n_test, n_train) < 0:
        raise UserError(f"synth: bad arguments n={n}, image_size={image_size}, max_count={max_count}, "
                        f"val_fraction={val_fraction}, test_fraction={test_fraction}")
    indices: Any = range(n)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc=f"synth -> {out}", unit="img")
    writer = ShardSetWriter(out, meta=synth_meta(), max_count=max_count, overwrite=overwrite)
    try:
        for i in indices:
            split = "train" if i < n_train else "val" if i < n_train + n_val else "test"
            image, ann, mask = render_sample(i, seed=seed, image_size=image_size)
            writer.write(split, image=_encode(image, "JPEG"), ext="jpg", ann=ann, mask=_encode(mask, "PNG"))
    except BaseException:
        writer.abort()
        raise
    return writer.close()
