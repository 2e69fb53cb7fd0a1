"""The ``objmtl-data convert`` command: its parser lives in :mod:`objmtl.data.parsers`."""

from __future__ import annotations

import argparse

from objmtl.data.convert import reader_for, run_conversion
from objmtl.data.convert.summary import print_report, write_data_config
from objmtl.errors import UserError

__all__ = ["run_convert"]


def run_convert(args: argparse.Namespace) -> None:
    """``objmtl-data convert``: read the source, write the shards, report, write the data config."""
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
