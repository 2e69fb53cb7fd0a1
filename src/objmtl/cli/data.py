"""objmtl-data: write the synthetic set, convert folders into shards, summarise a shard set."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from objmtl.cli.errors import report_user_errors

FORMATS = ("imagefolder",)


def _synth(args: argparse.Namespace) -> None:
    from objmtl.data.synth import write_synthetic

    meta = write_synthetic(args.out, n=args.n, seed=args.seed, image_size=args.size,
                           val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                           overwrite=args.overwrite, progress=True)
    counts = ", ".join(f"{s} {meta.count(s)}" for s in meta.splits)
    print(f"wrote {args.out}: {counts}; classes: {', '.join(meta.classes)}")
    print(f"train on it: objmtl-train data=shards data.root={args.out}")


def _convert(args: argparse.Namespace) -> None:
    from objmtl.data.convert import convert_image_folder

    report = convert_image_folder(args.src, args.out, val_fraction=args.val_fraction,
                                  test_fraction=args.test_fraction, seed=args.seed,
                                  overwrite=args.overwrite)
    print(f"{'split':<8}{'samples':>8}")
    for split, n in report["samples_written"].items():
        print(f"{split:<8}{n:>8}")
    dropped = sum(report["dropped"].values())
    print(f"images read {report['images_read']} = written {sum(report['samples_written'].values())}"
          f" + dropped {dropped}" + (f" ({report['dropped']})" if dropped else ""))
    print(f"classes ({len(report['classes'])}): {', '.join(report['classes'][:20])}"
          + (" ..." if len(report["classes"]) > 20 else ""))
    print(f"train on it: objmtl-train data=shards data.root={args.out}")


def _inspect(args: argparse.Namespace) -> None:
    from objmtl.data.schema import read_meta

    meta = read_meta(args.root)
    print(f"{args.root}: schema v{meta.schema_version}, tasks {', '.join(meta.tasks)}, "
          f"{meta.num_classes} classes")
    for split, shards in meta.splits.items():
        print(f"  {split:<6} {meta.count(split):>8} samples in {len(shards)} shards")


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

    c = sub.add_parser("convert", help="convert a data set into shards")
    c.add_argument("--format", choices=FORMATS, required=True)
    c.add_argument("--src", type=Path, required=True)
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--val-fraction", type=float, default=0.2,
                   help="carved from train, per class, when the source has no val folder")
    c.add_argument("--test-fraction", type=float, default=0.0)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--overwrite", action="store_true")
    c.set_defaults(func=_convert)

    i = sub.add_parser("inspect", help="counts per split from meta.json")
    i.add_argument("root", type=Path)
    i.set_defaults(func=_inspect)
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    with report_user_errors():
        args.func(args)


if __name__ == "__main__":
    sys.exit(main())
