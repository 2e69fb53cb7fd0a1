"""objmtl-data: write the synthetic set, convert folders into shards, summarise a shard set."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from objmtl.cli.errors import report_user_errors
from objmtl.data.parsers import add_browse_parser, add_convert_parser, add_inspect_parser
from objmtl.data.schema import read_meta


def _synth(args: argparse.Namespace) -> None:
    from objmtl.data.synth import write_synthetic

    meta = write_synthetic(args.out, n=args.n, seed=args.seed, image_size=args.size,
                           val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                           overwrite=args.overwrite, progress=True)
    counts = ", ".join(f"{s} {meta.count(s)}" for s in meta.splits)
    print(f"wrote {args.out}: {counts}; classes: {', '.join(meta.classes)}")
    print(f"train on it: objmtl-train data.root={args.out.resolve()}   # the synth recipe: data=synth transforms")


def _convert(args: argparse.Namespace) -> None:
    from objmtl.data.convert.command import run_convert  # readers and engine load when a conversion runs

    run_convert(args)


def _inspect(args: argparse.Namespace) -> None:
    read_meta(args.root)  # no such folder, no meta.json, a foreign meta.json: before torch loads
    from objmtl.data.inspect import run_inspect

    run_inspect(args)


def _browse(args: argparse.Namespace) -> None:
    from objmtl.data.browse import run_browse  # numpy and PIL; it checks SOURCE before reading shards

    run_browse(args)


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

    add_convert_parser(sub).set_defaults(func=_convert)
    add_inspect_parser(sub).set_defaults(func=_inspect)
    add_browse_parser(sub).set_defaults(func=_browse)
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    with report_user_errors():
        args.func(args)


if __name__ == "__main__":
    sys.exit(main())
