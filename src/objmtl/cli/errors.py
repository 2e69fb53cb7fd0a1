"""Turns user errors into one line on stderr and exit status 2, never a stack trace.

A user error is an :class:`~objmtl.errors.UserError`, Lightning's ``MisconfigurationException``, or any
error Hydra raises while instantiating a config node (a wrong argument typed as ``+trainer.foo=1``, a
bad value): that one names the config key. Everything else is a bug and keeps its traceback.
``HYDRA_FULL_ERROR=1`` (set by the user) shows the traceback of those that are not a UserError.

This module imports nothing heavy: every command imports it before parsing its arguments.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from objmtl.errors import UserError

__all__ = ["OURS", "hydra_message", "report_user_errors", "user_full_error", "user_message"]

OURS = "_OBJMTL_HYDRA_FULL_ERROR"
"""Set beside HYDRA_FULL_ERROR when objmtl-train set it (so Hydra's errors reach us); its DDP processes
inherit both and must not take it for the user's wish."""


def user_full_error() -> bool:
    """The user asked for full tracebacks (HYDRA_FULL_ERROR=1, not set by objmtl-train itself)."""
    return bool(os.environ.get("HYDRA_FULL_ERROR")) and not os.environ.get(OURS)


def user_message(error: BaseException) -> str:
    """The one line to show; errors re-raised from a DataLoader worker carry a traceback to strip."""
    text = str(error).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        text = last.split(": ", 1)[1] if last.startswith(("objmtl.errors.UserError", "UserError")) else last
    return text.splitlines()[0] if text else type(error).__name__


def _names(error: BaseException) -> set[str]:
    return {c.__name__ for c in type(error).__mro__}


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _instantiation_message(error: BaseException) -> str:
    """``KEY: reason`` for an error Hydra raised while building the config node at ``full_key``."""
    text = str(error)
    key = m.group(1) if (m := re.search(r"full_key: (\S+)", text)) else ""
    target = m.group(1) if (m := re.search(r"target '([^']+)'", text)) else ""
    cause = error.__cause__
    reason = user_message(cause) if cause is not None else text.strip().splitlines()[-1]
    if isinstance(cause, TypeError) and (m := re.search(r"unexpected keyword argument '(\w+)'", reason)):
        name = f"{key}.{m.group(1)}" if key else m.group(1)
        return f"{name}: not an argument of {target or 'its _target_'} (remove the key)"
    where = key or target or "config"
    return f"{where}: {reason}"


def _user_error_text(error: BaseException) -> str | None:
    """The one line for a user error anywhere in ``error``'s chain, or None for a bug."""
    chain = list(_chain(error))
    for e in chain:
        if isinstance(e, UserError):
            return user_message(e)
    for e in chain:
        if "MisconfigurationException" in _names(e):
            return f"trainer: {user_message(e)}"
    for e in chain:
        if "InstantiationException" in _names(e):
            return _instantiation_message(e)
    return None


def hydra_message(error: BaseException) -> tuple[str, str | None] | None:
    """(line, hint) for an error Hydra raised while composing the config (a misspelled option or key, an
    override it can't parse); None for any other error. The config search path dump is left out."""
    if not any(c.__module__.startswith("hydra") for c in type(error).__mro__ if c.__module__):
        return None
    if "InstantiationException" in _names(error):
        return None
    lines = [x.strip() for x in str(error).split("Config search path:")[0].strip().splitlines() if x.strip()]
    if not lines:
        return type(error).__name__, None
    head, rest = lines[0], lines[1:]
    cause = error.__cause__
    if cause is not None and str(cause).strip():
        head = f"{head.rstrip('.')}: {str(cause).strip().splitlines()[0]}"
    hint = None
    if rest and rest[0].startswith("Available options in"):
        hint = f"{rest[0].rstrip(':')}: {', '.join(rest[1:])}"
    elif rest:
        hint = rest[0]
    return head, hint


@contextmanager
def report_user_errors() -> Iterator[None]:
    try:
        yield
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:
        text = _user_error_text(e)
        if user_full_error() and not isinstance(e, UserError):
            text = None
        if text is None:
            raise
        print(f"error: {text}", file=sys.stderr)
        sys.exit(2)
