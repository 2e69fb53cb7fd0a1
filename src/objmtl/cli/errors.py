"""Turns user errors into one line on stderr and exit status 2, never a stack trace."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from objmtl.errors import UserError

__all__ = ["report_user_errors", "user_message"]


def user_message(error: BaseException) -> str:
    """The one line to show; errors re-raised from a DataLoader worker carry a traceback to strip."""
    text = str(error).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        text = last.split(": ", 1)[1] if last.startswith(("objmtl.errors.UserError", "UserError")) else last
    return text.splitlines()[0] if text else type(error).__name__


@contextmanager
def report_user_errors() -> Iterator[None]:
    try:
        yield
    except UserError as e:
        print(f"error: {user_message(e)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
