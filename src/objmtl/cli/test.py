"""objmtl-test: evaluate a run directory or checkpoint, print the metrics and write them as JSON."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from objmtl.cli.errors import report_user_errors


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="objmtl-test", description=__doc__,
        epilog="Trailing key=value items override the config stored in the checkpoint, "
               "e.g. data.num_workers=0.")
    p.add_argument("source", type=Path, help="a run directory (uses its best checkpoint) or a .ckpt file")
    p.add_argument("--data", type=Path, default=None, help="evaluate on this shard set instead of the run's")
    p.add_argument("--split", choices=("val", "test"), default=None,
                   help="default: test when the data has a test split, else val")
    p.add_argument("--out", type=Path, default=None,
                   help="metrics JSON (default RUN_DIR/eval_<split>/metrics.json)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--accelerator", default="auto", help="auto, cpu or gpu")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_intermixed_args(argv)
    with report_user_errors():
        from objmtl.errors import UserError
        from objmtl.runs.evaluate import evaluate

        bad = [o for o in args.overrides if "=" not in o]
        if bad:
            raise UserError(f"{bad[0]}: overrides are key=value")
        evaluate(args.source, split=args.split, data_root=args.data, out=args.out, overrides=args.overrides,
                 accelerator=args.accelerator, batch_size=args.batch_size)


if __name__ == "__main__":
    sys.exit(main())
