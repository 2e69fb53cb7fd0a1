"""The parsers of ``objmtl-data convert``, ``inspect`` and ``browse``, apart from their code: building them and
checking the shard folder import nothing heavy (:mod:`objmtl.data.inspect` reads shards through
torch's data pipeline), so a mistyped path answers at once. ``objmtl.cli.data`` attaches the code that runs
each command and loads it only then."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from objmtl.data.convert import FORMATS, format_options
from objmtl.data.schema import SPLITS

__all__ = ["add_browse_parser", "add_convert_parser", "add_inspect_parser", "convert_namespace"]


def add_convert_parser(sub: Any) -> argparse.ArgumentParser:
    """Registers ``objmtl-data convert`` on an ``add_subparsers()`` object."""
    c = sub.add_parser("convert", help="convert a data set into shards",
                       description="Formats: " + "; ".join(f"{k}: {v.help}" for k, v in FORMATS.items()))
    c.add_argument("--format", choices=list(FORMATS), required=True)
    c.add_argument("--src", type=Path, required=True, help="the data set root; no path may leave it")
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--images", default=None, help="image folder, relative to --src")
    c.add_argument("--labels", default=None, help="label folder (YOLO txt, VOC xml), relative to --src")
    c.add_argument("--masks", default=None, help="mask PNG folder, relative to --src")
    c.add_argument("--ann", action="append", metavar="SPLIT=FILE",
                   help="annotation file per split (COCO json, list or text file); repeatable")
    c.add_argument("--split-file", action="append", metavar="SPLIT=FILE",
                   help="image names per split (e.g. VOC ImageSets/Main/train.txt); repeatable")
    c.add_argument("--names", default=None, help="class names: YOLO data yaml, json, or one name per line")
    c.add_argument("--class-map", default=None, help="masks: yaml/json of source id -> name (0 = unlabeled)")
    c.add_argument("--separator", default=None, help="text: field separator (default: whitespace)")
    c.add_argument("--task", choices=("det", "seg", "pose"), default=None, help="yolo: what the lines hold")
    c.add_argument("--rle-masks", action="store_true", help="coco: render instance masks into KEY.mask.png")
    c.add_argument("--drop-background", action="store_true",
                   help="drop images without a label file (default: keep them as background)")
    c.add_argument("--val-fraction", type=float, default=0.2,
                   help="share carved from train for val when the source has no val split")
    c.add_argument("--test-fraction", type=float, default=0.0)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--workers", type=int, default=2, help="decoding processes (default 2)")
    c.add_argument("--max-count", type=int, default=1000, help="samples per shard file")
    c.add_argument("--strict", action="store_true", help="every drop or fix is an error")
    c.add_argument("--overwrite", action="store_true")
    for flag, help in format_options().items():
        c.add_argument(flag, default=None, help=help)
    return c



def convert_namespace(argv: list[str]) -> argparse.Namespace:
    """The namespace ``objmtl-data convert ARGV`` builds: every option a reader expects, with its default."""
    p = argparse.ArgumentParser(prog="objmtl-data")
    add_convert_parser(p.add_subparsers(dest="command", required=True))
    return p.parse_args(["convert", *argv])


def add_inspect_parser(sub: Any) -> argparse.ArgumentParser:
    """Registers ``objmtl-data inspect`` on an ``add_subparsers()`` object."""
    p = sub.add_parser("inspect", help="statistics of a shard set: classes, boxes, sizes, keypoints, masks")
    p.add_argument("root", type=Path, help="shard set folder (with meta.json)")
    p.add_argument("--split", choices=("all", *SPLITS), default="all")
    p.add_argument("--plot", type=Path, default=None, metavar="DIR", help="write histogram PNGs into DIR")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="read at most N samples per split")
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="write the full report as JSON")
    return p


def add_browse_parser(sub: Any) -> argparse.ArgumentParser:
    """Registers ``objmtl-data browse`` on an ``add_subparsers()`` object."""
    p = sub.add_parser("browse", help="draw samples with all their annotations into PNG files")
    p.add_argument("source", type=Path, help="a shard set (with meta.json), or a source folder with --format")
    p.add_argument("--out", type=Path, required=True, help="folder for the pictures")
    p.add_argument("--n", type=int, default=16, help="how many samples (default 16)")
    p.add_argument("--split", choices=SPLITS, default="train")
    p.add_argument("--seed", type=int, default=0, help="which samples (and, for a source, its split carving)")
    p.add_argument("--grid", action="store_true", help="also write a contact sheet grid.png")
    p.add_argument("--min-side", type=int, default=256, help="enlarge smaller images to this side (0: never)")
    p.add_argument("--max-side", type=int, default=1600, help="shrink larger images to this side (0: never)")
    g = p.add_argument_group("source folder (as for objmtl-data convert)")
    g.add_argument("--format", choices=list(FORMATS), default=None, help="read SOURCE with this converter")
    for flag in ("images", "labels", "masks", "names", "class-map", "separator"):
        g.add_argument(f"--{flag}", default=None)
    g.add_argument("--ann", action="append", metavar="SPLIT=FILE")
    g.add_argument("--split-file", action="append", metavar="SPLIT=FILE")
    g.add_argument("--task", choices=("det", "seg", "pose"), default=None)
    g.add_argument("--rle-masks", action="store_true")
    g.add_argument("--drop-background", action="store_true")
    g.add_argument("--val-fraction", type=float, default=0.2)
    g.add_argument("--test-fraction", type=float, default=0.0)
    for flag, help in format_options().items():
        g.add_argument(flag, default=None, help=help)
    return p
