"""The one exception type that the command-line entry points turn into a one-line message."""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """Bad input from the user: a missing path, a wrong key, an unreadable file.

    The CLI prints ``error: <message>`` and exits with status 2, without a stack trace.
    The message should name the file or key and the reason.
    """
