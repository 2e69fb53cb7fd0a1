"""Semantic segmentation from class-index PNG masks and a class map.

``objmtl-data convert --format masks --src ROOT --out OUT --images images/val2017
--masks semantic_segmentation/masks/val2017 --class-map semantic_segmentation/config.yaml``

- Images and masks pair by their path below ``--images`` / ``--masks`` without the suffix (the
  stem, for flat folders). An image without a mask is kept without one (counted as
  ``NO_LABEL``); a mask without an image is counted and dropped.
- ``--class-map``: a yaml or json mapping source id -> name (a ``classes:`` or ``names:`` mapping
  inside, as in Lightly's config, or the mapping itself, or a list by id). Source ids may have gaps
  (COCO panoptic: up to 200): the named ids become training ids 0..C-1 in sorted-id order, and
  ``mask_classes == classes`` are their names. An id named ``unlabeled`` (or ``void``, ``ignore``)
  becomes 255 (ignore); so does 255 itself unless the map names it (VOC's boundary value). Ids in a
  mask that the map does not name become "no class" (the engine counts them and writes ignore).
  ``--names`` instead gives contiguous names by id (0..C-1).
- The engine reads masks as they are stored: a mode ``P`` palette PNG (Pascal VOC
  ``SegmentationClass``) gives its palette indices, which are the class ids; other modes are made
  single-channel (``L``).
- Splits: ``train``/``val``/``test`` sub-folders of ``--images``, else ``--split-file SPLIT=FILE``
  (image names or stems; the listed images are the data set), else a seeded ratio.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml

from objmtl.data.convert.engine import NO_CLASS, NO_LABEL, Conversion, SourceSample
from objmtl.data.convert.image_folder import IMAGE_SUFFIXES
from objmtl.data.convert.options import class_names, locate, split_files
from objmtl.data.convert.splits import read_split_file, split_by_ratio
from objmtl.data.schema import IGNORE_INDEX, SPLITS, Meta
from objmtl.errors import UserError

__all__ = ["IGNORE_NAMES", "MASK_SUFFIXES", "class_lut", "from_args", "read_class_map", "read_masks"]

IGNORE_NAMES = {"unlabeled", "unlabelled", "void", "ignore"}
MASK_SUFFIXES = {".png", ".bmp", ".tif", ".tiff"}


def read_class_map(path: str | Path) -> dict[int, str]:
    """Source id -> name from a yaml / json file (``classes:`` or ``names:`` inside, a mapping or a list).

    Args:
        path: the class map file.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--class-map {path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: can't parse ({str(e).splitlines()[0]})") from None
    if isinstance(data, dict):
        for key in ("classes", "names"):
            if key in data:
                data = data[key]
                break
    if isinstance(data, list):
        data = dict(enumerate(data))
    if not isinstance(data, dict) or not data:
        raise UserError(f"{path}: expected a 'classes:' mapping of source id -> name (or a list by id)")
    out: dict[int, str] = {}
    for key, name in data.items():
        try:
            sid = int(key)
        except (TypeError, ValueError):
            raise UserError(f"{path}: class id {key!r} is not an integer") from None
        if not 0 <= sid <= 255:
            raise UserError(f"{path}: class id {sid} does not fit an 8-bit mask (0..255)")
        if not isinstance(name, str | int | float):
            raise UserError(f"{path}: class {sid}: expected a name, got {type(name).__name__}")
        out[sid] = str(name)
    return out


def class_lut(id_to_name: dict[int, str]) -> tuple[list[str], np.ndarray]:
    """The training class names and the 256-entry source id -> training id table.

    Named ids map to 0..C-1 in sorted-id order; ignore names and an unnamed 255 to 255; the rest to
    the engine's "no class" (254).

    Args:
        id_to_name: source id -> name.
    """
    lut = np.full(256, NO_CLASS, dtype=np.uint8)
    if 255 not in id_to_name:
        lut[255] = IGNORE_INDEX
    names: list[str] = []
    for sid in sorted(id_to_name):
        if id_to_name[sid].strip().lower() in IGNORE_NAMES:
            lut[sid] = IGNORE_INDEX
        else:
            lut[sid] = len(names)
            names.append(id_to_name[sid])
    if not names:
        raise UserError("the class map names no class besides 'unlabeled'")
    if len(names) >= NO_CLASS:
        raise UserError(f"the class map names {len(names)} classes; masks hold at most {NO_CLASS - 1}")
    return names, lut


def _files(folder: Path, suffixes: set[str], flag: str) -> dict[str, Path]:
    """Relative path without suffix -> file; two files with one key is an error."""
    if not folder.is_dir():
        raise UserError(f"{flag} {folder}: no such folder")
    out: dict[str, Path] = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith("."):
            key = p.relative_to(folder).with_suffix("").as_posix()
            if key in out:
                raise UserError(f"{flag}: {out[key]} and {p} have the same name; which one is meant?")
            out[key] = p
    return out


def _splits(keys: list[str], split_lists: dict[str, Path], val_fraction: float, test_fraction: float,
            seed: int) -> dict[str, str]:
    """Image key -> split: split folders, then split files (which define the set), then a ratio."""
    if keys and all(k.split("/", 1)[0] in SPLITS and "/" in k for k in keys):
        return {k: k.split("/", 1)[0] for k in keys}
    if split_lists:
        by_stem = {Path(k).name: k for k in keys}
        out: dict[str, str] = {}
        for split, path in split_lists.items():
            for name in read_split_file(path):
                stem = Path(name).with_suffix("").name if Path(name).suffix.lower() in IMAGE_SUFFIXES else name
                out[by_stem.get(Path(stem).name, stem)] = split
        return out
    return split_by_ratio(keys, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)


def read_masks(src: str | Path, *, images: str, masks: str, class_map: str | Path | None = None,
               names: list[str] | None = None, split_lists: dict[str, Path] | None = None,
               val_fraction: float = 0.2, test_fraction: float = 0.0, seed: int = 0) -> Conversion:
    """Pairs images with class-index masks into a :class:`Conversion` (see the module doc).

    Args:
        src: the data set root; nothing may leave it.
        images: the image folder, relative to ``src``.
        masks: the mask folder, relative to ``src``.
        class_map: source id -> name file (yaml / json).
        names: contiguous class names by id, instead of ``class_map``.
        split_lists: split -> file of image names; the listed images are the data set.
        val_fraction: share for val when there are no split folders or files.
        test_fraction: share for test, likewise.
        seed: the seed of that split.
    """
    src = Path(src)
    if not src.is_dir():
        raise UserError(f"{src}: no such folder")
    if class_map is not None:
        id_to_name = read_class_map(class_map)
    elif names:
        id_to_name = dict(enumerate(names))
    else:
        raise UserError("--format masks needs --class-map FILE (source id -> name) or --names FILE")
    classes, lut = class_lut(id_to_name)
    image_files = _files(src / images, IMAGE_SUFFIXES, "--images")
    mask_files = _files(src / masks, MASK_SUFFIXES, "--masks")
    if not image_files:
        raise UserError(f"--images {src / images}: no images with suffixes {', '.join(sorted(IMAGE_SUFFIXES))}")
    assign = _splits(list(image_files), split_lists or {}, val_fraction, test_fraction, seed)
    samples = []
    for key in sorted(set(image_files) | set(mask_files)):
        image, mask = image_files.get(key), mask_files.get(key)
        if split_lists and key not in assign:
            continue  # not in any split file: not part of the data set
        if image is None:
            samples.append(SourceSample(split=assign.get(key, "train"), image=None, where=str(mask)))
        elif mask is None:
            samples.append(SourceSample(split=assign[key], image=image, where=str(image), events=[NO_LABEL]))
        else:
            samples.append(SourceSample(split=assign[key], image=image, mask=mask, where=str(mask)))
    if split_lists:  # a listed name with neither image nor mask: a label without image, counted
        known = set(image_files) | set(mask_files)
        samples += [SourceSample(split=s, image=None, where=f"split file entry {k}")
                    for k, s in sorted(assign.items()) if k not in known]
    meta = Meta(classes=classes, tasks=["seg"], mask_classes=list(classes), source=f"masks:{src.name}")
    return Conversion(meta=meta, samples=samples, root=src, total=len(samples), mask_lut=lut)


def from_args(fmt: str) -> Callable[[argparse.Namespace], Conversion]:
    """The CLI's reader for ``--format masks``."""

    def masks(args: argparse.Namespace) -> Conversion:
        if not args.images or not args.masks:
            raise UserError("--format masks needs --images FOLDER and --masks FOLDER (relative to --src)")
        if args.drop_background:
            raise UserError("--drop-background is not supported by --format masks (images without a mask "
                            "are kept without one and counted)")
        return read_masks(args.src, images=args.images, masks=args.masks, class_map=locate(args.class_map, args.src) if args.class_map else None,
                          names=class_names(args.names, src=args.src) if args.names else None,
                          split_lists=split_files(args.split_file, "--split-file", src=args.src),
                          val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed)

    return masks
