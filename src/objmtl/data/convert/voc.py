"""Pascal VOC: ``Annotations/*.xml`` boxes, ``JPEGImages``, optional ``SegmentationClass`` palette PNGs.

Conventions:

- Boxes: VOC stores 1-based inclusive pixel indices (``xmin=1, xmax=W`` covers the whole image).
  They become 0-based xyxy in continuous pixel coordinates as ``(xmin - 1, ymin - 1, xmax, ymax)``,
  the convention of detectron2's ``pascal_voc.py`` loader (so a full-image box is ``0, 0, W, H``).
- Classes: the ``--names`` file if given (a name it lacks is an error); else the 20 VOC classes in
  their usual order when every name seen is one of them; else the sorted names seen.
- Images: ``<filename>`` of the xml under ``--images`` (default ``JPEGImages``), falling back to an
  image named like the xml stem. An xml without image is counted (label file without image); an
  image without xml is kept as background and counted.
- Splits: ``--split-file SPLIT=ImageSets/Main/SPLIT.txt`` lists (first field of each line = the
  id); then the split files define the image set, and an id with neither xml nor image is counted
  as a label without image. Without split files, every xml and image is split by ratio.
- Masks (``--masks SegmentationClass``): ``<id>.png`` palette PNGs whose index is the class id
  + 1 (0 background, 255 boundary = ignore); other indices are counted and written as ignore.
  Images without a mask file are written without mask.
- XML is parsed with ``defusedxml``: entity expansion and external entities are refused.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element, ParseError

import numpy as np
from defusedxml import DefusedXmlException
from defusedxml import ElementTree as SafeET

from objmtl.data.convert.engine import NO_CLASS, NO_LABEL, Conversion, SourceSample, inside
from objmtl.data.convert.image_folder import IMAGE_SUFFIXES
from objmtl.data.convert.options import class_names, split_files
from objmtl.data.convert.splits import read_split_file, split_by_ratio
from objmtl.data.schema import IGNORE_INDEX, Meta
from objmtl.errors import UserError

__all__ = ["VOC_CLASSES", "from_args", "read_voc"]

VOC_CLASSES = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor"]


def _not_voc(path: Path, why: str) -> UserError:
    return UserError(f"{path}: not a VOC annotation ({why})")


def _number(node: Element, tag: str, path: Path, what: str) -> float:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise _not_voc(path, f"{what} has no <{tag}>")
    try:
        return float(child.text)
    except ValueError:
        raise UserError(f"{path}: {what} <{tag}> {child.text.strip()!r} is not a number") from None


def _flag(node: Element, tag: str, path: Path, what: str) -> int:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        return 0
    text = child.text.strip().lower()
    if text in ("0", "1", "true", "false"):
        return int(text in ("1", "true"))
    raise UserError(f"{path}: {what} <{tag}> {child.text.strip()!r} is not 0 or 1")


def _parse_xml(path: Path) -> dict[str, Any]:
    """One xml -> ``{"filename", "names", "boxes" (0-based), "difficult", "truncated"}``."""
    try:
        root = SafeET.parse(str(path)).getroot()
    except DefusedXmlException as e:
        raise UserError(f"{path}: refused unsafe XML ({type(e).__name__})") from None
    except ParseError as e:
        raise UserError(f"{path}: not valid XML ({e})") from None
    except OSError as e:
        raise UserError(f"{path}: can't read ({e.strerror or e})") from None
    if root.tag != "annotation":
        raise _not_voc(path, f"root element <{root.tag}>, expected <annotation>")
    out: dict[str, Any] = {"filename": (root.findtext("filename") or "").strip(), "names": [], "boxes": [],
                           "difficult": [], "truncated": []}
    for i, obj in enumerate(root.findall("object")):
        what = f"object {i}"
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise _not_voc(path, f"{what} has no <name>")
        box = obj.find("bndbox")
        if box is None:
            raise _not_voc(path, f"{what} has no <bndbox>")
        x1, y1, x2, y2 = (_number(box, t, path, f"{what} <bndbox>") for t in ("xmin", "ymin", "xmax", "ymax"))
        out["names"].append(name)
        out["boxes"].append([x1 - 1.0, y1 - 1.0, x2, y2])
        out["difficult"].append(_flag(obj, "difficult", path, what))
        out["truncated"].append(_flag(obj, "truncated", path, what))
    return out


def _pick_classes(seen: set[str], names: list[str] | None) -> list[str]:
    if names is not None:
        return names
    if seen <= set(VOC_CLASSES):
        return list(VOC_CLASSES)
    return sorted(seen)


def _ids_by_split(ids: list[str], lists: dict[str, Path], val_fraction: float, test_fraction: float,
                  seed: int) -> dict[str, str]:
    if not lists:
        return split_by_ratio(ids, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    out: dict[str, str] = {}
    for split, path in lists.items():
        for key in read_split_file(path):
            key = Path(key).stem if Path(key).suffix.lower() in IMAGE_SUFFIXES | {".xml"} else key
            if out.get(key, split) != split:
                raise UserError(f"{path}: id {key!r} is also in the {out[key]} split file")
            out[key] = split
    if not out:
        raise UserError(f"{', '.join(map(str, lists.values()))}: the split files list no ids")
    return out


def read_voc(src: str | Path, *, images: str = "JPEGImages", labels: str = "Annotations",
             masks: str | None = None, lists: dict[str, Path] | None = None, classes: list[str] | None = None,
             drop_background: bool = False, val_fraction: float = 0.2, test_fraction: float = 0.0,
             seed: int = 0) -> Conversion:
    """Reads a VOC tree (see the module docstring for the conventions).

    Args:
        src: the VOC root (e.g. ``VOCdevkit/VOC2012``); no image or mask may leave it.
        images: image folder, relative to ``src``.
        labels: xml folder, relative to ``src``.
        masks: segmentation PNG folder, relative to ``src`` (adds the ``seg`` task).
        lists: split -> split file of ids; default: split every id by ratio.
        classes: class names by id; default: the VOC classes or the sorted names seen.
        drop_background: leave out images without xml instead of keeping them as background.
        val_fraction: share of ids for val when there are no split files.
        test_fraction: share of ids for test when there are no split files.
        seed: seed of the ratio split.

    Returns:
        The conversion for :func:`~objmtl.data.convert.engine.run_conversion`.
    """
    src = Path(src)
    if not src.is_dir():
        raise UserError(f"{src}: no such folder")
    image_dir, label_dir = src / images, src / labels
    if not label_dir.is_dir():
        raise UserError(f"{src}: no {labels} folder of VOC xml files (set --labels)")
    mask_dir = src / masks if masks else None
    if mask_dir is not None and not mask_dir.is_dir():
        raise UserError(f"{mask_dir}: no such mask folder")
    xmls = {p.stem: p for p in sorted(label_dir.glob("*.xml")) if p.is_file()}
    found = sorted(p for p in image_dir.glob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES) \
        if image_dir.is_dir() else []
    by_stem: dict[str, Path] = {}
    for p in found:
        by_stem.setdefault(p.stem, p)
    if not xmls and not found:
        raise UserError(f"{src}: no VOC xml files in {labels}/ and no images in {images}/")

    parsed = {stem: _parse_xml(path) for stem, path in xmls.items()}
    chosen: dict[str, Path | None] = {}
    for stem, ann in parsed.items():
        cand = image_dir / ann["filename"] if ann["filename"] else None
        if cand is not None and (cand.is_file() or not inside(cand, src)):
            chosen[stem] = cand  # a path that leaves src is passed on: the engine counts it
        else:
            chosen[stem] = by_stem.get(stem)
    claimed = {p.resolve() for p in chosen.values() if p is not None}
    background = [] if drop_background else \
        [p.stem for p in found if p.resolve() not in claimed and p.stem not in parsed]

    ids = sorted({*parsed, *background})
    assign = _ids_by_split(ids, lists or {}, val_fraction, test_fraction, seed)
    names = _pick_classes({n for a in parsed.values() for n in a["names"]}, classes)
    index = {n: i for i, n in enumerate(names)}

    samples: list[SourceSample] = []
    for key in list(assign) if lists else ids:  # split-file order, else sorted ids
        split = assign[key]
        mask = mask_dir / f"{key}.png" if mask_dir is not None else None
        mask = mask if mask is not None and mask.is_file() else None
        if key in parsed:
            ann = parsed[key]
            unknown = [n for n in ann["names"] if n not in index]
            if unknown:
                known = ", ".join(f"{i}={n}" for i, n in enumerate(names[:30]))
                raise UserError(f"{xmls[key]}: class {unknown[0]!r} is not a known class (known: {known})")
            out = {"boxes": ann["boxes"], "classes": [index[n] for n in ann["names"]],
                   "difficult": ann["difficult"], "truncated": ann["truncated"]}
            image = chosen[key]
            where = str(xmls[key])
            samples.append(SourceSample(split=split, image=image, ann=out, mask=mask if image else None,
                                        where=where))
        elif key in by_stem:
            if drop_background:
                continue
            samples.append(SourceSample(split=split, image=by_stem[key], ann={"boxes": [], "classes": []},
                                        mask=mask, where=str(by_stem[key]), events=[NO_LABEL]))
        else:  # a split-file id with neither xml nor image
            samples.append(SourceSample(split=split, image=None, where=f"{label_dir / key}.xml"))

    lut = None
    tasks = ["det"]
    mask_classes: list[str] = []
    if mask_dir is not None:
        tasks.append("seg")
        mask_classes = ["background", *names]
        if len(mask_classes) >= NO_CLASS:
            raise UserError(f"{mask_dir}: {len(names)} classes do not fit VOC's 8-bit palette masks")
        lut = np.full(256, NO_CLASS, dtype=np.uint8)
        lut[: len(mask_classes)] = np.arange(len(mask_classes), dtype=np.uint8)
        lut[IGNORE_INDEX] = IGNORE_INDEX
    meta = Meta(classes=names, tasks=tasks, mask_classes=mask_classes, source=f"voc:{src.name}")
    return Conversion(meta=meta, samples=samples, root=src, total=len(samples), mask_lut=lut)


def from_args(fmt: str) -> Callable[[argparse.Namespace], Conversion]:
    """The CLI entry of ``--format voc``."""

    def voc(args: argparse.Namespace) -> Conversion:
        names = class_names(args.names, src=args.src) if args.names else None
        return read_voc(args.src, images=args.images or "JPEGImages", labels=args.labels or "Annotations",
                        masks=args.masks, lists=split_files(args.split_file, "--split-file", src=args.src), classes=names,
                        drop_background=args.drop_background, val_fraction=args.val_fraction,
                        test_fraction=args.test_fraction, seed=args.seed)

    return voc
