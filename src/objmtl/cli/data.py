"""objmtl-data: write the synthetic set, convert folders into shards, summarise a shard set."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from objmtl.cli.data_parsers import add_browse_parser, add_inspect_parser
from objmtl.cli.errors import report_user_errors
from objmtl.data.convert import FORMATS  # the table only: readers and engine load when a conversion runs
from objmtl.errors import UserError


def _synth(args: argparse.Namespace) -> None:
    from objmtl.data.synth import write_synthetic

    meta = write_synthetic(args.out, n=args.n, seed=args.seed, image_size=args.size,
                           val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                           overwrite=args.overwrite, progress=True)
    counts = ", ".join(f"{s} {meta.count(s)}" for s in meta.splits)
    print(f"wrote {args.out}: {counts}; classes: {', '.join(meta.classes)}")
    print(f"train on it: objmtl-train data.root={args.out.resolve()}   # the synth recipe: data=synth transforms")


def _convert(args: argparse.Namespace) -> None:
    from objmtl.data.convert import reader_for, run_conversion
    from objmtl.data.convert.summary import print_report, write_data_config

    if args.out.exists() and not args.overwrite:
        raise UserError(f"{args.out}: already exists (--overwrite replaces it)")
    conversion = reader_for(args.format)(args)
    report = run_conversion(conversion, args.out, workers=args.workers, strict=args.strict,
                            overwrite=args.overwrite, max_count=args.max_count)
    print_report(report)
    path, commands = write_data_config(args.out, conversion.meta)
    print(f"report: {args.out / 'report.json'}\ndata config: {path}")
    if not commands:
        print(f"(no objmtl-train task for {', '.join(conversion.meta.tasks)} yet; data config kept for when it lands)")
    for lead, command in zip(("train on it:", "   or:"), commands, strict=False):
        print(f"{lead} {command}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="objmtl-data", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="write the embedded synthetic shapes set (all four annotation kinds)")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--n", type=int, default=1000, help="images in all splits (default 1000)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    s.add_argument("--val-fraction", type=float, default=0.2)
    s.add_argument("--test-fraction", type=float, default=0.1)
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=_synth)

    c = sub.add_parser("convert", help="convert a data set into shards",
                       description="Formats: " + "; ".join(f"{k}: {v[1]}" for k, v in FORMATS.items()))
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
    c.set_defaults(func=_convert)

    add_inspect_parser(sub)
    add_browse_parser(sub)
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    with report_user_errors():
        args.func(args)


if __name__ == "__main__":
    sys.exit(main())
