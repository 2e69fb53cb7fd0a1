"""ObjectiveMTL's plain-text box lists: one image per line, its boxes in absolute pixels.

A line is ``relative/image/path x1 y1 x2 y2 cls [x1 y1 x2 y2 cls ...]``; a path with no boxes is
an image with no objects. Field rule:

- with ``--separator SEP``: the line is split on ``SEP`` (fields stripped, empty fields ignored),
  so ``path,x1,y1,x2,y2,cls`` works with ``--separator ,`` (``\\t`` means a tab);
- without it: the first whitespace-separated field is the path, and the rest is split on
  whitespace and commas alike, so the common ``path x1,y1,x2,y2,cls x1,y1,x2,y2,cls`` form
  reads the same as the all-whitespace one (the path may then not contain spaces).

Coordinates are numbers (``nan`` and ``inf`` are read as such, and the engine drops those
instances, counted); the class is an integer id into ``--names`` (default: ids ``0..max`` named by
their number). Paths are relative to ``--src``; one that leaves it is passed on unchanged and the
engine counts it; a listed image that does not exist is counted as a label without image.
Splits: one list per ``--ann SPLIT=FILE``; a missing val / test split is carved from train by
``--val-fraction`` / ``--test-fraction`` with ``--seed``.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path

from objmtl.data.convert.engine import Conversion, SourceSample
from objmtl.data.convert.options import class_names, split_files
from objmtl.data.convert.splits import split_by_ratio
from objmtl.data.schema import Meta
from objmtl.errors import UserError

__all__ = ["from_args", "read_text_lists"]

_Entry = tuple[str, list[list[float]], list[int], str]  # relative path, boxes, classes, where


def _fields(line: str, separator: str | None) -> tuple[str, list[str]]:
    if separator is not None:
        parts = [f.strip() for f in line.split(separator)]
        parts = [f for f in parts if f] or [""]
        return parts[0], parts[1:]
    head, *tail = line.split(None, 1)
    return head, (tail[0].replace(",", " ").split() if tail else [])


def _number(text: str, where: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise UserError(f"{where}: coordinate {text!r} is not a number") from None


def _class_id(text: str, where: str) -> int:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value != int(value):
        raise UserError(f"{where}: class {text!r} is not an integer id")
    return int(value)


def _read_list(path: Path, separator: str | None) -> list[_Entry]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a UTF-8 text file") from None
    entries = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{path}:{n}"
        rel, values = _fields(line, separator)
        if not rel:
            raise UserError(f"{where}: no image path in {line.strip()!r}")
        if len(values) % 5:
            raise UserError(f"{where}: expected the image path then groups of 5 fields 'x1 y1 x2 y2 cls', "
                            f"got {len(values)} fields after the path")
        boxes, classes = [], []
        for i in range(0, len(values), 5):
            boxes.append([_number(v, where) for v in values[i:i + 4]])
            classes.append(_class_id(values[i + 4], where))
        entries.append((rel, boxes, classes, where))
    return entries


def _leaves(path: Path, root: Path) -> bool:
    return os.path.commonpath([path.resolve(), root.resolve()]) != str(root.resolve())


def read_text_lists(src: str | Path, *, lists: dict[str, Path], classes: list[str] | None = None,
                    separator: str | None = None, val_fraction: float = 0.2, test_fraction: float = 0.0,
                    seed: int = 0) -> Conversion:
    """Reads plain-text box lists (see the module docstring for the line format).

    Args:
        src: the folder the image paths are relative to.
        lists: split -> list file.
        classes: class names by id; default ``["0", ..., "max id"]``.
        separator: field separator; default whitespace (and commas between the numbers).
        val_fraction: share of train carved into val when there is no val list.
        test_fraction: share of train carved into test when there is no test list.
        seed: seed of that carving.

    Returns:
        The conversion for :func:`~objmtl.data.convert.engine.run_conversion`.
    """
    src = Path(src)
    if not src.is_dir():
        raise UserError(f"{src}: no such folder")
    if not lists:
        raise UserError("--format text needs --ann SPLIT=FILE (e.g. --ann train=train.txt)")
    if separator == "\\t":
        separator = "\t"
    if separator == "":
        raise UserError("--separator: must not be empty")
    by_split = {split: _read_list(Path(path), separator) for split, path in lists.items()}
    if not any(by_split.values()):
        raise UserError(f"{', '.join(map(str, lists.values()))}: the list files name no images")
    seen = [c for entries in by_split.values() for _, _, cs, _ in entries for c in cs]
    if classes is None:
        classes = [str(i) for i in range(max(seen, default=-1) + 1)]
    for entries in by_split.values():
        for _, _, cs, where in entries:
            bad = [c for c in cs if not 0 <= c < len(classes)]
            if bad:
                known = ", ".join(f"{i}={c}" for i, c in enumerate(classes[:30]))
                more = ", ..." if len(classes) > 30 else ""
                raise UserError(f"{where}: class id {bad[0]} is not a known class (known: {known}{more})")

    items: list[tuple[str, _Entry]] = [(s, e) for s, entries in by_split.items() for e in entries]
    carve = {"val": val_fraction if "val" not in by_split else 0.0,
             "test": test_fraction if "test" not in by_split else 0.0}
    if any(carve.values()) and "train" in by_split:
        assign = split_by_ratio(sorted({e[0] for e in by_split["train"]}), val_fraction=carve["val"],
                                test_fraction=carve["test"], seed=seed)
        items = [(assign[e[0]] if s == "train" else s, e) for s, e in items]

    samples = []
    for split, (rel, boxes, cls, where) in items:
        image = src / rel
        # a listed path that leaves src goes to the engine as it is (counted there, never resolved away)
        found = image.is_file() or _leaves(image, src)
        samples.append(SourceSample(split=split, image=image if found else None,
                                    ann={"boxes": boxes, "classes": cls}, where=where))
    meta = Meta(classes=list(classes), tasks=["det"], source=f"text:{src.name}")
    return Conversion(meta=meta, samples=samples, root=src, total=len(samples))


def from_args(fmt: str) -> Callable[[argparse.Namespace], Conversion]:
    """The CLI entry of ``--format text``."""

    def text(args: argparse.Namespace) -> Conversion:
        names = class_names(args.names, src=args.src) if args.names else None
        return read_text_lists(args.src, lists=split_files(args.ann, "--ann", src=args.src), classes=names,
                               separator=args.separator, val_fraction=args.val_fraction,
                               test_fraction=args.test_fraction, seed=args.seed)

    return text
