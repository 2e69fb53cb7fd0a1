"""``from_args`` for the classification formats (imagefolder, list)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from objmtl.data.convert.engine import Conversion
from objmtl.data.convert.image_folder import read_image_folder, read_list_files
from objmtl.data.convert.options import class_names, split_files
from objmtl.errors import UserError


def from_args(fmt: str) -> Callable[[argparse.Namespace], Conversion]:
    def imagefolder(args: argparse.Namespace) -> Conversion:
        return read_image_folder(args.src, val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                                 seed=args.seed)

    def lists(args: argparse.Namespace) -> Conversion:
        files = split_files(args.ann, "--ann", src=args.src)
        if not files:
            raise UserError("--format list needs --ann SPLIT=FILE (e.g. --ann train=train.txt)")
        names = class_names(args.names, src=args.src) if args.names else None
        return read_list_files(args.src, lists={s: Path(f) for s, f in files.items()}, classes=names,
                               val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed)

    return {"imagefolder": imagefolder, "list": lists}[fmt]
