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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from objmtl.data.convert.engine import Conversion, ConversionReport, SourceSample, run_conversion

__all__ = ["FORMATS", "Conversion", "ConversionReport", "SourceSample", "reader_for", "run_conversion"]

# format -> (module, what it reads)
FORMATS: dict[str, tuple[str, str]] = {
    "imagefolder": ("objmtl.data.convert.cli_readers", "classification: [split/]class/image folders"),
    "list": ("objmtl.data.convert.cli_readers", "classification: list files of 'relative/path label' lines"),
    "yolo": ("objmtl.data.convert.yolo", "YOLO txt: boxes, segment polygons or pose keypoints"),
    "text": ("objmtl.data.convert.plain_text", "plain-text box lists: path x1 y1 x2 y2 cls ..."),
    "voc": ("objmtl.data.convert.voc", "Pascal VOC xml boxes (+ palette PNG segmentation masks)"),
    "coco": ("objmtl.data.convert.coco", "COCO json: instances (boxes, polygons, RLE) and person_keypoints"),
    "masks": ("objmtl.data.convert.masks", "semantic masks: class-index PNGs with a class map"),
}

_ENGINE = ("Conversion", "ConversionReport", "SourceSample", "run_conversion")


def __getattr__(name: str) -> Any:
    if name in _ENGINE:
        return getattr(importlib.import_module("objmtl.data.convert.engine"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def reader_for(fmt: str) -> Callable[[argparse.Namespace], Conversion]:
    module, _ = FORMATS[fmt]
    return importlib.import_module(module).from_args(fmt)
