"""Converters from common data set layouts into shard sets.

Each format has a module with ``from_args(args) -> Conversion`` (the CLI's entry) and a typed
``read_<format>(...)`` for code; :func:`~objmtl.data.convert.engine.run_conversion` does the rest.

Importing this package loads nothing but the format table (``objmtl-data``'s parser needs it);
the engine and the readers load when first used.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from objmtl.data.convert.engine import Conversion, ConversionReport, SourceSample, run_conversion

__all__ = ["FORMATS", "Conversion", "Format", "ConversionReport", "SourceSample", "format_options", "reader_for",
           "run_conversion"]

class Format(NamedTuple):
    """One ``--format``: the module with its ``from_args``, what it reads, and the options only it takes
    (``(flag, help)`` pairs that ``objmtl-data convert`` and ``browse`` add to their parsers)."""

    module: str
    help: str
    options: tuple[tuple[str, str], ...] = ()


_TARGETS = ("--targets", "regression (list, csv): target names, comma-separated; csv: its columns (default: every "
            "column but the path column)")
_PATH_COLUMN = ("--path-column", "csv: the column of image paths (default: path, image, file or filename)")

FORMATS: dict[str, Format] = {
    "imagefolder": Format("objmtl.data.convert.cli_readers", "classification: [split/]class/image folders"),
    # regression (task kind reg) registers here: list files with --targets, and CSV tables
    "list": Format("objmtl.data.convert.regression", "classification: list files of 'relative/path label' lines; "
                   "with --targets A[,B]: regression, 'relative/path a [b]' lines", options=(_TARGETS,)),
    "csv": Format("objmtl.data.convert.regression", "regression: a CSV table with a header row, a path column and "
                  "target columns (--targets A[,B])", options=(_TARGETS, _PATH_COLUMN)),
    "yolo": Format("objmtl.data.convert.yolo", "YOLO txt: boxes, segment polygons or pose keypoints"),
    "text": Format("objmtl.data.convert.plain_text", "plain-text box lists: path x1 y1 x2 y2 cls ..."),
    "voc": Format("objmtl.data.convert.voc", "Pascal VOC xml boxes (+ palette PNG segmentation masks)"),
    "coco": Format("objmtl.data.convert.coco", "COCO json: instances (boxes, polygons, RLE) and person_keypoints"),
    "masks": Format("objmtl.data.convert.masks", "semantic masks: class-index PNGs with a class map"),
}


def format_options() -> dict[str, str]:
    """Every format's own options, flag -> help (a flag two formats share is added once)."""
    out: dict[str, str] = {}
    for fmt in FORMATS.values():
        for flag, help in fmt.options:
            out.setdefault(flag, help)
    return out


_ENGINE = ("Conversion", "ConversionReport", "SourceSample", "run_conversion")


def __getattr__(name: str) -> Any:
    if name in _ENGINE:
        return getattr(importlib.import_module("objmtl.data.convert.engine"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def reader_for(fmt: str) -> Callable[[argparse.Namespace], Conversion]:
    return importlib.import_module(FORMATS[fmt].module).from_args(fmt)
