"""Path checks the commands run before importing torch, Lightning or Hydra, so that a mistyped
path answers with one line at once instead of after seconds of imports.

Each check raises :class:`~objmtl.errors.UserError` (``PATH: reason``) for what is certainly wrong
and lets the rest through: the code behind the command still checks everything it reads.
This module imports only the standard library and :mod:`objmtl.errors`.
"""

from __future__ import annotations

from pathlib import Path

from objmtl.errors import UserError

__all__ = ["check_checkpoint", "check_exists", "check_model", "looks_like_checkpoint"]


def looks_like_checkpoint(path: Path) -> bool:
    """torch's zip format or a legacy pickle, by the first bytes (the test :func:`torch.load`'s caller
    ``objmtl.checkpoint.load_checkpoint`` makes too); any file name."""
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError:
        return False
    return magic.startswith(b"PK") or magic[:1] == b"\x80"


def check_checkpoint(path: str | Path) -> Path:
    """A run directory (holding ``checkpoints/`` or ``config.yaml``) or a checkpoint file."""
    path = Path(path)
    if path.is_dir():
        if not ((path / "checkpoints").is_dir() or (path / "config.yaml").is_file()):
            raise UserError(f"{path}: not a run directory (no checkpoints/ or config.yaml inside)")
    elif not path.exists():
        raise UserError(f"{path}: no such run directory or checkpoint")
    elif not looks_like_checkpoint(path):
        raise UserError(f"{path}: not a checkpoint (neither torch's zip format nor a pickle)")
    return path


def check_model(path: str | Path) -> Path:
    """An exported .onnx file, or what :func:`check_checkpoint` accepts."""
    path = Path(path)
    if path.suffix.lower() == ".onnx" and not path.is_dir():
        if not path.is_file():
            raise UserError(f"{path}: no such ONNX file")
        return path
    if path.is_file() and not looks_like_checkpoint(path):
        raise UserError(f"{path}: not a model (an .onnx file, a checkpoint or a run directory)")
    return check_checkpoint(path)


def check_exists(path: str | Path) -> Path:
    """Any file or folder."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file or folder")
    return path

