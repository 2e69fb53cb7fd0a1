"""The parsers of ``objmtl-data inspect`` and ``browse``, apart from their code: building them and
checking the shard folder import nothing heavy (:mod:`objmtl.data.inspect` reads shards through
torch's data pipeline), so a mistyped path answers at once. The commands load their modules when run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from objmtl.data.convert import FORMATS
from objmtl.data.schema import SPLITS, read_meta

__all__ = ["add_browse_parser", "add_inspect_parser"]


def _inspect(args: argparse.Namespace) -> None:
    read_meta(args.root)  # no such folder, no meta.json, a foreign meta.json: before torch loads
    from objmtl.data.inspect import run_inspect

    run_inspect(args)


def _browse(args: argparse.Namespace) -> None:
    from objmtl.data.browse import run_browse  # numpy and PIL; it checks SOURCE before reading shards

    run_browse(args)


def add_inspect_parser(sub: Any) -> argparse.ArgumentParser:
    """Registers ``objmtl-data inspect`` on an ``add_subparsers()`` object."""
    p = sub.add_parser("inspect", help="statistics of a shard set: classes, boxes, sizes, keypoints, masks")
    p.add_argument("root", type=Path, help="shard set folder (with meta.json)")
    p.add_argument("--split", choices=("all", *SPLITS), default="all")
    p.add_argument("--plot", type=Path, default=None, metavar="DIR", help="write histogram PNGs into DIR")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="read at most N samples per split")
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="write the full report as JSON")
    p.set_defaults(func=_inspect)
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
    p.set_defaults(func=_browse)
    return p
