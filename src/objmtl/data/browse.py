"""``objmtl-data browse``: pictures of samples with every annotation drawn, from shards or a source folder.

Each picture shows the image with its instances (each one's mask in its own colour when the sample has outlines,
boxes with class names, keypoints with the skeleton) and the image label as a caption, and, when the sample has
a semantic mask, the mask overlay beside it. From a source folder (``--format``), samples are drawn straight from the
format reader, in source pixels, without writing shards: a quick look before a long conversion.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from objmtl.data.convert import format_options
from objmtl.data.instance_masks import decode_rles, instance_rles
from objmtl.data.parsers import (  # the parser lives apart: it loads nothing heavy
    add_browse_parser,
    convert_namespace,
)
from objmtl.data.schema import IGNORE_INDEX, SPLITS, Meta
from objmtl.errors import UserError
from objmtl.viz import draw

__all__ = ["BrowseResult", "add_browse_parser", "browse", "run_browse", "sample_panels"]

log = logging.getLogger(__name__)

# the ``objmtl-data convert`` source options browse accepts too (argparse dest -> default)
SOURCE_OPTIONS: dict[str, Any] = {
    "images": None, "labels": None, "masks": None, "ann": None, "split_file": None, "names": None,
    "class_map": None, "separator": None, "task": None, "rle_masks": False, "drop_background": False,
    "val_fraction": 0.2, "test_fraction": 0.0,
}
BACKGROUND_NAMES = {"background", "bg", "_background_", "unlabeled", "unlabelled", "__background__"}


@dataclass
class BrowseResult:
    """What :func:`browse` wrote: one PNG per sample, the contact sheet, and what it had to skip."""

    pictures: list[Path] = field(default_factory=list)
    grid: Path | None = None
    skipped: Counter[str] = field(default_factory=Counter)


def _scale(h: int, w: int, min_side: int, max_side: int) -> float:
    """Whole-number upscale for small images (crisp pixels), downscale for huge ones, else 1."""
    if min_side and min(h, w) < min_side:
        return float(min(math.ceil(min_side / min(h, w)), max(1, max_side // max(h, w)) if max_side else 64))
    if max_side and max(h, w) > max_side:
        return max_side / max(h, w)
    return 1.0


def _scaled(ann: dict[str, Any], s: float) -> dict[str, Any]:
    out = dict(ann)
    if "boxes" in ann:
        out["boxes"] = [[v * s for v in b] for b in ann["boxes"]]
    if "polygons" in ann:
        out["polygons"] = [[[v * s for v in ring] for ring in inst] for inst in ann["polygons"]]
    if "keypoints" in ann:
        out["keypoints"] = [[[x * s, y * s, v] for x, y, v in inst] for inst in ann["keypoints"]]
    return out


def _instance_masks(ann: dict[str, Any], *, height: int, width: int) -> np.ndarray | None:
    """Each instance's mask (n, h, w) from its outline (polygons or RLE; an instance without one: empty), or None
    when the sample has no outlines at all."""
    if not ann.get("boxes") or not (ann.get("polygons") or ann.get("rle")):
        return None
    rles, _ = instance_rles(ann, height=height, width=width)
    out = np.zeros((len(rles), height, width), np.uint8)
    have = [i for i, r in enumerate(rles) if r is not None]
    out[have] = decode_rles([rles[i] for i in have], height=height, width=width)
    return out


def sample_panels(image: np.ndarray, ann: dict[str, Any], mask: np.ndarray | None, *, meta: Meta,
                  min_side: int = 256, max_side: int = 1600) -> list[np.ndarray]:
    """The pictures of one sample: annotations (and label caption), then the mask overlay if any.

    Args:
        image: H x W x 3 uint8 RGB.
        ann: the sample's annotation (schema keys, pixels of ``image``).
        mask: H x W class ids (255 = ignore) or None.
        meta: class, mask class and keypoint names.
        min_side: smaller images are enlarged by a whole factor to at least this side (0: never).
        max_side: larger images are shrunk to this side (0: never).

    Returns:
        One or two H' x W' x 3 uint8 arrays (the first taller by its caption when there is a label).
    """
    s = _scale(image.shape[0], image.shape[1], min_side, max_side)
    outlines = _instance_masks(ann, height=image.shape[0], width=image.shape[1])
    if s != 1.0:
        size = (round(image.shape[1] * s), round(image.shape[0] * s))
        resample = Image.Resampling.NEAREST if s > 1 else Image.Resampling.BILINEAR
        image = np.asarray(Image.fromarray(image).resize(size, resample))
        if mask is not None:
            mask = np.asarray(Image.fromarray(mask).resize(size, Image.Resampling.NEAREST))
        ann = _scaled(ann, s)
        if outlines is not None:
            outlines = np.stack([np.asarray(Image.fromarray(m).resize(size, Image.Resampling.NEAREST))
                                 for m in outlines]) if len(outlines) else outlines[:, :size[1], :size[0]]
    classes = [int(c) for c in ann.get("classes", [])] or [0] * len(ann.get("boxes", []))
    picture = image
    box_colors = None
    if outlines is not None:  # instance masks, one colour per instance (its box and name in the same colour)
        box_colors = draw.instance_colors(len(classes))
        picture = draw.draw_instance_masks(picture, outlines, colors=box_colors)
    elif ann.get("polygons"):
        picture = draw.draw_polygons(picture, ann["polygons"], classes)
    if ann.get("boxes"):
        picture = draw.draw_boxes(picture, ann["boxes"], classes, class_names=meta.classes, colors=box_colors)
    if ann.get("keypoints"):
        skeleton = meta.keypoints.skeleton if meta.keypoints else []
        picture = draw.draw_keypoints(picture, ann["keypoints"], skeleton=skeleton,
                                      colors=[draw.class_color(c) for c in classes])
    if ann.get("label") is not None:
        y = int(ann["label"])
        name = meta.classes[y] if 0 <= y < meta.num_classes else y
        picture = draw.draw_label_text(picture, f"label: {name}")
    panels = [picture]
    if mask is not None:
        bg = 0 if meta.mask_classes and meta.mask_classes[0].lower() in BACKGROUND_NAMES else None
        index = {c: i for i, c in enumerate(meta.classes)}  # a mask class named like a class: the same colour
        colors = [draw.class_color(index.get(name, i)) for i, name in enumerate(meta.mask_classes)]
        panels.append(draw.draw_mask(image, mask, background_index=bg, colors=colors or None))
    return panels


def _safe(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name)[:80] or "sample"


def _from_shards(root: Path, *, split: str, n: int, seed: int) -> tuple[Meta, Iterator[tuple[str, Any]]]:
    from objmtl.data.shard_reader import ShardDataset, decode_sample, iter_shard

    ds = ShardDataset(root=root, split=split)
    picked = np.sort(np.random.default_rng(seed).choice(ds.total, size=min(n, ds.total), replace=False))

    def samples() -> Iterator[tuple[str, Any]]:
        start = 0
        for url, count in ds.shards:
            local = {int(i) - start for i in picked if start <= i < start + count}
            if local:
                for i, raw in enumerate(iter_shard(url, min(local), max(local) + 1), min(local)):
                    if i in local:
                        try:
                            d = decode_sample(raw)
                        except (OSError, ValueError) as e:
                            yield f"{url}: {raw['__key__']}", e
                            continue
                        yield d["key"], (d["image"], d["ann"], d["mask"])
            start += count

    return ds.meta, samples()


def _convert_args(source: Path, fmt: str, options: dict[str, Any]) -> argparse.Namespace:
    """The namespace ``objmtl-data convert`` would build: its parser's defaults, then ``options``."""
    values = {**SOURCE_OPTIONS, "seed": 0, "workers": 1, "max_count": 1000, "strict": False,
              "overwrite": False}
    try:  # the convert parser knows every option its readers expect, including ones added later
        values.update(vars(convert_namespace(["--format", fmt, "--src", str(source), "--out", os.devnull])))
    except SystemExit as e:
        log.debug("convert parser refused (%s); using browse's own defaults", e)
    values.update(options, format=fmt, src=source)
    return argparse.Namespace(**values)


def _reservoir(items: Iterable[Any], k: int, rng: np.random.Generator) -> list[Any]:
    chosen: list[Any] = []
    for i, item in enumerate(items):
        if i < k:
            chosen.append(item)
        elif (j := int(rng.integers(i + 1))) < k:
            chosen[j] = item
    return chosen


def _from_source(source: Path, *, fmt: str, options: dict[str, Any], split: str, n: int, seed: int,
                 skipped: Counter[str]) -> tuple[Meta, Iterator[tuple[str, Any]]]:
    from objmtl.data.convert import FORMATS, reader_for

    if fmt not in FORMATS:
        raise UserError(f"--format {fmt}: unknown (known: {', '.join(FORMATS)})")
    try:
        read = reader_for(fmt)
    except ImportError as e:
        raise UserError(f"--format {fmt}: its reader is not available in this objmtl ({e})") from None
    conv = read(_convert_args(source, fmt, {"seed": seed, **options}))

    def with_image() -> Iterator[Any]:
        for sample in conv.samples:
            if sample.split != split:
                continue
            if sample.image is None:
                skipped["label file without image"] += 1
                continue
            yield sample

    chosen = _reservoir(with_image(), n, np.random.default_rng(seed))

    def samples() -> Iterator[tuple[str, Any]]:
        for sample in chosen:
            try:
                with Image.open(sample.image) as im:
                    image = np.asarray(im.convert("RGB"))
                mask = None
                if sample.mask is not None:
                    with Image.open(sample.mask) as m:
                        mask = np.asarray(m if m.mode in ("L", "P") else m.convert("L"))
                    if conv.mask_lut is not None:
                        mask = conv.mask_lut[mask]
                        mask = np.where(mask == 254, IGNORE_INDEX, mask).astype(np.uint8)
                    if mask.shape != image.shape[:2]:
                        raise ValueError(f"mask {mask.shape} and image {image.shape[:2]} differ in size")
            except (OSError, ValueError, Image.DecompressionBombError) as e:
                yield sample.where or str(sample.image), e
                continue
            try:
                key = str(Path(sample.image).relative_to(conv.root).with_suffix(""))
            except ValueError:
                key = Path(sample.image).stem
            yield key, (image, sample.ann, mask)

    return conv.meta, samples()


def browse(source: str | Path, *, out: str | Path, n: int = 16, split: str = "train", seed: int = 0,
           grid: bool = False, fmt: str | None = None, source_options: dict[str, Any] | None = None,
           min_side: int = 256, max_side: int = 1600) -> BrowseResult:
    """Draws ``n`` random samples of a split, with all their annotations, into PNG files.

    Args:
        source: a shard set (with ``meta.json``), or a source folder when ``fmt`` is given.
        out: folder for ``NNN_KEY.png`` (and ``grid.png``); created.
        n: how many samples.
        split: ``train``, ``val`` or ``test``.
        seed: which samples (the same seed picks the same ones).
        grid: also write a contact sheet ``grid.png`` of all pictures.
        fmt: a format of ``objmtl-data convert`` (e.g. ``imagefolder``) to read a source folder.
        source_options: that format's options, as ``convert``'s argparse names (``images``, ``names``, ...).
        min_side: smaller images are enlarged by a whole factor to at least this side (0: never).
        max_side: larger images are shrunk to this side (0: never).

    Returns:
        The written pictures, the grid, and counts of skipped samples by reason.

    Raises:
        UserError: a bad source, split or format.
    """
    source, out = Path(source), Path(out)
    if split not in SPLITS:
        raise UserError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    result = BrowseResult()
    if fmt:
        meta, samples = _from_source(source, fmt=fmt, options=source_options or {}, split=split, n=n,
                                     seed=seed, skipped=result.skipped)
    elif (source / "meta.json").is_file():
        meta, samples = _from_shards(source, split=split, n=n, seed=seed)
    else:
        raise UserError(f"{source}: not a shard set (no meta.json); for a source folder, give --format")
    out.mkdir(parents=True, exist_ok=True)
    for key, item in samples:
        if isinstance(item, Exception):
            log.warning("%s: skipped (%s)", key, item)
            result.skipped["image that can't be read"] += 1
            continue
        try:
            panels = sample_panels(*item, meta=meta, min_side=min_side, max_side=max_side)
        except (TypeError, ValueError, IndexError) as e:  # source annotations are not validated yet
            log.warning("%s: skipped, annotation can't be drawn (%s)", key, e)
            result.skipped["annotation that can't be drawn"] += 1
            continue
        titles = [key, "mask"][: len(panels)]
        path = out / f"{len(result.pictures):03d}_{_safe(key)}.png"
        Image.fromarray(draw.side_by_side(panels, titles)).save(path)
        result.pictures.append(path)
    if grid and result.pictures:
        result.grid = _contact_sheet(result.pictures, out / "grid.png")
    return result


def _contact_sheet(pictures: list[Path], path: Path, *, max_cell: tuple[int, int] = (480, 320),
                   pad: int = 4) -> Path:
    thumbs = []
    for p in pictures:
        with Image.open(p) as im:
            thumb = im.convert("RGB")
        thumb.thumbnail(max_cell)
        thumbs.append(thumb)
    cw, ch = max(t.width for t in thumbs), max(t.height for t in thumbs)
    cols = math.ceil(math.sqrt(len(thumbs) * ch / cw))  # a roughly square sheet
    rows = math.ceil(len(thumbs) / cols)
    sheet = Image.new("RGB", (cols * (cw + pad) + pad, rows * (ch + pad) + pad), (255, 255, 255))
    for i, thumb in enumerate(thumbs):
        r, c = divmod(i, cols)
        sheet.paste(thumb, (pad + c * (cw + pad), pad + r * (ch + pad)))
    sheet.save(path)
    return path


def run_browse(args: argparse.Namespace) -> None:
    """``objmtl-data browse``: draws the samples and says where they went."""
    dests = [*SOURCE_OPTIONS, *(flag.lstrip("-").replace("-", "_") for flag in format_options())]
    options = {k: getattr(args, k) for k in dests if hasattr(args, k)}
    result = browse(args.source, out=args.out, n=args.n, split=args.split, seed=args.seed, grid=args.grid,
                    fmt=args.format, source_options=options, min_side=args.min_side, max_side=args.max_side)
    print(f"wrote {len(result.pictures)} pictures to {args.out}" + (f", contact sheet {result.grid}"
                                                                     if result.grid else ""))
    for reason, count in result.skipped.items():
        print(f"skipped {count}: {reason}")

