"""The drawing functions every picture of objmtl uses: annotations and predictions on images.

Each function takes an H x W x 3 uint8 RGB array and returns a new array (the input is never
changed). Coordinates are absolute pixels of that image; class colours come from one fixed
palette (:func:`class_color`), so a class has the same colour in every picture. Text goes
through :func:`objmtl.viz.fonts.get_font`, which picks a font that can draw it (CJK included).
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from objmtl.viz.fonts import get_font

__all__ = ["IGNORE_COLOR", "class_color", "draw_boxes", "draw_instance_masks", "draw_keypoints", "draw_label_text",
           "draw_mask", "draw_polygons", "font_size_for", "instance_colors", "line_width_for", "palette",
           "side_by_side"]

RGB = tuple[int, int, int]

# Trubetskoy's 20 distinct colours (grey and white left out: grey means "ignore"), then golden-ratio hues
_BASE: tuple[RGB, ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
    (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180),
    (0, 0, 128),
)
IGNORE_COLOR: RGB = (128, 128, 128)


def class_color(index: int) -> RGB:
    """The colour of class ``index``: the same in every picture and every run."""
    index = int(index)
    if 0 <= index < len(_BASE):
        return _BASE[index]
    h = (0.12 + 0.618033988749895 * index) % 1.0
    s, v = (0.65, 0.95) if index % 2 else (0.9, 0.75)
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return round(r * 255), round(g * 255), round(b * 255)


def palette(n: int) -> np.ndarray:
    """The colours of classes ``0..n-1`` as an n x 3 uint8 array."""
    return np.array([class_color(i) for i in range(n)], dtype=np.uint8).reshape(-1, 3)


def line_width_for(image: np.ndarray) -> int:
    """A box / polygon line width that stays visible at the image's size."""
    return max(1, round(min(image.shape[:2]) / 200))


def font_size_for(image: np.ndarray) -> int:
    """A caption size that stays legible but small against the image (10 to 22 px)."""
    return int(np.clip(min(image.shape[:2]) / 25, 10, 22))


def _text_color(fill: RGB) -> RGB:
    return (0, 0, 0) if 0.299 * fill[0] + 0.587 * fill[1] + 0.114 * fill[2] > 150 else (255, 255, 255)


def _check(image: np.ndarray) -> Image.Image:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 image, got {image.shape} {image.dtype}")
    return Image.fromarray(image).copy()


def _colors(labels: Sequence[int], colors: Sequence[RGB] | None) -> list[RGB]:
    if colors is not None:
        if len(colors) != len(labels):
            raise ValueError(f"{len(colors)} colours for {len(labels)} instances")
        return [tuple(int(v) for v in c) for c in colors]  # type: ignore[misc]
    return [class_color(int(c)) for c in labels]


def _caption(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, fill: RGB, *, size: int,
             bounds: tuple[int, int], above: bool = True) -> None:
    """A filled label box with ``text``, above (or, without room, inside) the point ``xy``."""
    font = get_font(size, text)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    tw, th = right - left + 4, bottom - top + 4
    x = min(max(0.0, xy[0]), max(0.0, bounds[0] - tw))
    y = xy[1] - th if above and xy[1] - th >= 0 else min(max(0.0, xy[1]), max(0.0, bounds[1] - th))
    draw.rectangle((x, y, x + tw - 1, y + th - 1), fill=fill)
    draw.text((x + 2 - left, y + 2 - top), text, font=font, fill=_text_color(fill))


def draw_boxes(image: np.ndarray, boxes: Any, labels: Sequence[int], *, class_names: Sequence[str],
               scores: Sequence[float] | None = None, colors: Sequence[RGB] | None = None,
               width: int | None = None, font_size: int | None = None) -> np.ndarray:
    """Draws xyxy boxes with a caption ``name [score]`` in the class colour.

    Args:
        image: H x W x 3 uint8 RGB.
        boxes: N x 4 (x1, y1, x2, y2) absolute pixels.
        labels: N class indices (into ``class_names``; an unknown index is shown as a number).
        class_names: class names by index.
        scores: N confidences shown after the name (predictions); None for ground truth.
        colors: N RGB colours; default: the class colours.
        width: line width; default from the image size.
        font_size: caption size in pixels; default from the image size.

    Returns:
        A new image with the boxes drawn.
    """
    pil = _check(image)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(labels) != len(boxes) or (scores is not None and len(scores) != len(boxes)):
        n_scores = None if scores is None else len(scores)
        raise ValueError(f"{len(boxes)} boxes, {len(labels)} labels, {n_scores} scores")
    draw = ImageDraw.Draw(pil)
    width = width or line_width_for(image)
    size = font_size or font_size_for(image)
    cols = _colors(labels, colors)
    for i, (box, c) in enumerate(zip(boxes, labels, strict=True)):
        x1, y1, x2, y2 = box
        draw.rectangle((x1, y1, max(x1, x2), max(y1, y2)), outline=cols[i], width=width)
        name = class_names[int(c)] if 0 <= int(c) < len(class_names) else str(int(c))
        text = name if scores is None else f"{name} {float(scores[i]):.2f}"
        _caption(draw, (x1, y1), text, cols[i], size=size, bounds=pil.size)
    return np.asarray(pil)


def draw_mask(image: np.ndarray, mask: np.ndarray, *, alpha: float = 0.5, ignore_index: int = 255,
              background_index: int | None = None, colors: Sequence[RGB] | None = None) -> np.ndarray:
    """Overlays a semantic mask: each class id in its colour, ``ignore_index`` hatched grey.

    Args:
        image: H x W x 3 uint8 RGB.
        mask: H x W class ids.
        alpha: opacity of the class colours.
        ignore_index: the id shown as grey diagonal hatching.
        background_index: an id left uncoloured (e.g. 0 when class 0 is "background").
        colors: RGB colours of ids ``0..len-1``; other ids: the palette (:func:`class_color`).

    Returns:
        A new image with the overlay.
    """
    image = np.asarray(image)
    _check(image)
    mask = np.asarray(mask)
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask {mask.shape} and image {image.shape[:2]} differ in size")
    ids = mask.astype(np.int64)
    lut = palette(256).astype(np.float32)
    if colors is not None:
        lut[: len(colors)] = np.asarray(colors, np.float32).reshape(-1, 3)[:256]
    out = image.astype(np.float32)
    colored = ids != ignore_index
    if background_index is not None:
        colored &= ids != background_index
    out[colored] = (1 - alpha) * out[colored] + alpha * lut[np.clip(ids[colored], 0, 255)]
    ignore = ids == ignore_index
    if ignore.any():
        yy, xx = np.mgrid[0:ids.shape[0], 0:ids.shape[1]]
        hatch = ((xx + yy) % 6) < 2
        grey = np.where(hatch[..., None], 230.0, np.array(IGNORE_COLOR, np.float32))
        out[ignore] = (1 - max(alpha, 0.6)) * out[ignore] + max(alpha, 0.6) * grey[ignore]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def instance_colors(n: int) -> list[RGB]:
    """``n`` colours that tell neighbouring instances apart: hues a golden angle apart, saturated and bright."""
    out = []
    for i in range(n):
        r, g, b = colorsys.hsv_to_rgb((0.05 + 0.618033988749895 * i) % 1.0, 0.85 if i % 2 else 0.7, 0.95)
        out.append((round(r * 255), round(g * 255), round(b * 255)))
    return out


def draw_instance_masks(image: np.ndarray, masks: Any, *, colors: Sequence[RGB] | None = None,
                        alpha: float = 0.5) -> np.ndarray:
    """Overlays binary instance masks, each in its own colour (later ones on top).

    Args:
        image: H x W x 3 uint8 RGB.
        masks: N x H x W, nonzero inside.
        colors: N RGB colours; default :func:`instance_colors`.
        alpha: their opacity.

    Returns:
        A new image with the overlay.
    """
    image = np.asarray(image)
    _check(image)
    masks = np.asarray(masks).reshape(-1, *image.shape[:2]).astype(bool)
    cols = list(colors) if colors is not None else instance_colors(len(masks))
    if len(cols) != len(masks):
        raise ValueError(f"{len(masks)} masks, {len(cols)} colours")
    out = image.astype(np.float32)
    for m, c in zip(masks, cols, strict=True):
        out[m] = (1 - alpha) * out[m] + alpha * np.asarray(c, np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def draw_polygons(image: np.ndarray, polygons: Sequence[Sequence[Sequence[float]]], labels: Sequence[int], *,
                  colors: Sequence[RGB] | None = None, alpha: float = 0.35,
                  width: int | None = None) -> np.ndarray:
    """Fills and outlines instance polygons in the class colour.

    Args:
        image: H x W x 3 uint8 RGB.
        polygons: per instance, a list of flat rings ``[x0, y0, x1, y1, ...]`` (absolute pixels).
        labels: per instance, its class index (for the colour).
        colors: per instance RGB colours; default: the class colours.
        alpha: fill opacity (the outline is opaque).
        width: outline width; default from the image size.

    Returns:
        A new image with the polygons drawn.
    """
    pil = _check(image)
    if len(polygons) != len(labels):
        raise ValueError(f"{len(polygons)} polygon sets for {len(labels)} labels")
    cols = _colors(labels, colors)
    overlay = Image.new("RGBA", pil.size, (0, 0, 0, 0))
    fill_draw = ImageDraw.Draw(overlay)
    rings = [(np.asarray(r, np.float64).reshape(-1, 2), cols[i]) for i, inst in enumerate(polygons)
             for r in inst if len(r) >= 6]
    for xy, c in rings:
        fill_draw.polygon([tuple(p) for p in xy], fill=(*c, round(255 * alpha)))
    pil = Image.alpha_composite(pil.convert("RGBA"), overlay).convert("RGB")
    draw = ImageDraw.Draw(pil)
    w = width or line_width_for(image)
    for xy, c in rings:
        pts = [tuple(p) for p in xy]
        draw.line([*pts, pts[0]], fill=c, width=w, joint="curve")
    return np.asarray(pil)


def draw_keypoints(image: np.ndarray, keypoints: Any, *, skeleton: Sequence[Sequence[int]] = (),
                   radius: int | None = None, colors: Sequence[RGB] | None = None) -> np.ndarray:
    """Draws keypoints (v=2 filled, v=1 hollow, v=0 not drawn) and skeleton lines between labelled points.

    Args:
        image: H x W x 3 uint8 RGB.
        keypoints: N x K x 3 (x, y, v) absolute pixels, per instance.
        skeleton: pairs of keypoint indices to join.
        radius: point radius; default from the image size.
        colors: per instance RGB colours; default: palette colour of the instance index.

    Returns:
        A new image with the keypoints drawn.
    """
    pil = _check(image)
    kps = np.asarray(keypoints, dtype=np.float64)
    kps = kps.reshape(len(kps), -1, 3) if kps.size else np.zeros((0, 0, 3))
    cols = _colors(list(range(len(kps))), colors)
    r = radius if radius is not None else max(2, round(min(image.shape[:2]) / 100))
    draw = ImageDraw.Draw(pil)
    width = max(1, r // 2)
    for inst, c in zip(kps, cols, strict=True):
        for a, b in skeleton:
            if inst[a, 2] > 0 and inst[b, 2] > 0:
                draw.line([tuple(inst[a, :2]), tuple(inst[b, :2])], fill=c, width=width)
        edge = _text_color(c)  # a contrasting rim keeps points visible on their own colour (e.g. a caption)
        for x, y, v in inst:
            if v >= 2:
                draw.ellipse((x - r, y - r, x + r, y + r), fill=c, outline=edge)
            elif v >= 1:
                draw.ellipse((x - r, y - r, x + r, y + r), outline=c, width=width)
                inner = r - width
                if inner >= 1:
                    draw.ellipse((x - inner, y - inner, x + inner, y + inner), outline=edge)
    return np.asarray(pil)


def draw_label_text(image: np.ndarray, text: str, *, font_size: int | None = None,
                    background: RGB = (24, 24, 24), color: RGB = (255, 255, 255)) -> np.ndarray:
    """Adds a caption strip with ``text`` (e.g. a classification label) under the image.

    Args:
        image: H x W x 3 uint8 RGB.
        text: the caption; any script (see :mod:`objmtl.viz.fonts`).
        font_size: text size in pixels; default from the image size.
        background: strip colour.
        color: text colour.

    Returns:
        A new image, taller by the strip (wider if the text is); the original pixels keep their coordinates.
    """
    pil = _check(image)
    font = get_font(font_size or font_size_for(image), text)
    measure = ImageDraw.Draw(pil)
    left, top, right, bottom = measure.textbbox((0, 0), text, font=font)
    strip_h = bottom - top + 8
    out = Image.new("RGB", (max(pil.width, right - left + 8), pil.height + strip_h), background)
    out.paste(pil, (0, 0))
    ImageDraw.Draw(out).text((4 - left, pil.height + 4 - top), text, font=font, fill=color)
    return np.asarray(out)


def side_by_side(images: Sequence[np.ndarray], titles: Sequence[str] | None = None, *, pad: int = 4,
                 font_size: int = 14, background: RGB = (255, 255, 255)) -> np.ndarray:
    """Puts images in one row, top-aligned, each under its title.

    Args:
        images: H x W x 3 uint8 RGB arrays (sizes may differ).
        titles: one per image (or None for no title row).
        pad: pixels between images and around the title row.
        font_size: title size in pixels.
        background: fill colour of the gaps.

    Returns:
        The composite image.
    """
    if not images:
        raise ValueError("side_by_side needs at least one image")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"{len(titles)} titles for {len(images)} images")
    pils = [_check(im) for im in images]
    title_h = font_size + 2 * pad if titles else 0
    width = sum(p.width for p in pils) + pad * (len(pils) - 1)
    out = Image.new("RGB", (width, title_h + max(p.height for p in pils)), background)
    x = 0
    for i, p in enumerate(pils):
        out.paste(p, (x, title_h))
        if titles:  # drawn on a strip of the image's width, so a long title is cut, not overlapping
            strip = Image.new("RGB", (p.width, title_h), background)
            font = get_font(font_size, titles[i])
            ImageDraw.Draw(strip).text((0, pad), titles[i], font=font, fill=(0, 0, 0))
            out.paste(strip, (x, 0))
        x += p.width + pad
    return np.asarray(out)
