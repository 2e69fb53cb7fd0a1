"""Path checks the commands run before importing torch, Lightning or Hydra, so that a mistyped
path answers with one line at once instead of after seconds of imports.

Each check raises :class:`~objmtl.errors.UserError` (``PATH: reason``) for what is certainly wrong
and lets the rest through: the code behind the command still checks everything it reads.
This module imports only the standard library and :mod:`objmtl.errors`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from objmtl.errors import UserError

__all__ = ["CHECKPOINT_SUFFIXES", "already_imported", "check_checkpoint", "check_exists", "check_model"]

CHECKPOINT_SUFFIXES = (".ckpt", ".pth", ".pt")
_SUFFIXES = ", ".join(CHECKPOINT_SUFFIXES[:-1]) + " or " + CHECKPOINT_SUFFIXES[-1]


def already_imported(module: str) -> bool:
    """Whether ``module`` is loaded already. The early checks only exist to answer before the heavy
    imports; once those are paid (a caller in Python, a test that stubs the worker function), the
    command leaves the checking to the code it calls."""
    return module in sys.modules


def check_checkpoint(path: str | Path) -> Path:
    """A run directory (holding ``checkpoints/`` or ``config.yaml``) or a .ckpt / .pth / .pt file."""
    path = Path(path)
    if path.is_dir():
        if not ((path / "checkpoints").is_dir() or (path / "config.yaml").is_file()):
            raise UserError(f"{path}: not a run directory (no checkpoints/ or config.yaml inside)")
    elif not path.exists():
        raise UserError(f"{path}: no such run directory or checkpoint")
    elif path.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise UserError(f"{path}: not a checkpoint file ({_SUFFIXES}) or a run directory")
    return path


def check_model(path: str | Path) -> Path:
    """An exported .onnx file, or what :func:`check_checkpoint` accepts."""
    path = Path(path)
    if path.suffix.lower() == ".onnx" and not path.is_dir():
        if not path.is_file():
            raise UserError(f"{path}: no such ONNX file")
        return path
    if path.is_file() and path.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise UserError(f"{path}: not a model file (.onnx, {_SUFFIXES}) or a run directory")
    return check_checkpoint(path)


def check_exists(path: str | Path) -> Path:
    """Any file or folder."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file or folder")
    return path

