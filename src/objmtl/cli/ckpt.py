"""objmtl-ckpt: look into and rework checkpoints (ObjectiveMTL's checkpoint_show / change_key /
rename_params / wash).

Every load is torch.load(weights_only=True); a file that needs arbitrary unpickling is refused
unless --trust is given (only for files whose source you trust: unpickling can run code)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from objmtl.cli.errors import report_user_errors
from objmtl.cli.paths import check_checkpoint


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="objmtl-ckpt", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="{show,change-key,rename,wash}")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help, description=help)
        c.add_argument("ckpt", type=Path, help="a checkpoint file or a run directory (its best checkpoint)")
        c.add_argument("--trust", action="store_true", help="allow arbitrary unpickling (trusted files only)")
        return c

    show = command("show", "the top-level entries and the parameter tree: shapes, dtypes, counts, sizes")
    show.add_argument("--depth", type=int, default=None,
                      help="group parameters by the first N parts of their names (e.g. 2: model.backbone)")

    move = command("change-key", "move the weights to another top-level key (state_dict, model, ...; '-' = "
                                 "a bare state dict)")
    move.add_argument("--from", dest="src", default=None, help="default: where the weights are")
    move.add_argument("--to", dest="dst", required=True)
    move.add_argument("--out", type=Path, required=True)

    ren = command("rename", "rename the weights with a regular expression (re.sub)")
    ren.add_argument("pattern", help="a Python regular expression, e.g. '^backbone\\.' ")
    ren.add_argument("replacement", help="its replacement (\\1 for groups), e.g. 'encoder.'")
    ren.add_argument("--out", type=Path, default=None)
    ren.add_argument("--dry-run", action="store_true", help="only print old -> new")

    wash = command("wash", "keep only the model weights (and the config that rebuilds the model): drops optimizer "
                           "state, EMA / teacher / projector and loss-only weights; prints sizes before and after")
    wash.add_argument("--out", type=Path, required=True)
    wash.add_argument("--fp16", action="store_true", help="store floating-point weights as float16")
    wash.add_argument("--strip-prefix", action="append", default=None, metavar="PREFIX",
                      help="prefix to strip from names (repeatable; default: model.)")
    wash.add_argument("--drop", default=None, metavar="REGEX",
                      help="names to drop (default: EMA / teacher / momentum encoder / projector / loss modules)")
    wash.add_argument("--no-config", action="store_true", help="do not keep the objmtl config")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    with report_user_errors():
        check_checkpoint(args.ckpt)  # a wrong path answers before torch loads
        from objmtl.checkpoint import find_checkpoint
        from objmtl.runs import ckpt_tools

        args.ckpt = find_checkpoint(args.ckpt)

        if args.command == "show":
            ckpt_tools.show(args.ckpt, depth=args.depth, trust=args.trust)
        elif args.command == "change-key":
            ckpt_tools.change_key(args.ckpt, out=args.out, src=args.src, dst=args.dst, trust=args.trust)
        elif args.command == "rename":
            ckpt_tools.rename(args.ckpt, pattern=args.pattern, replacement=args.replacement, out=args.out,
                              dry_run=args.dry_run, trust=args.trust)
        else:
            ckpt_tools.wash(args.ckpt, out=args.out, fp16=args.fp16, trust=args.trust,
                            strip_prefixes=args.strip_prefix or ("model.",), keep_config=not args.no_config,
                            drop=ckpt_tools.WASH_DROP if args.drop is None else args.drop)


if __name__ == "__main__":
    sys.exit(main())
