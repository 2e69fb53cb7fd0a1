"""Where objmtl keeps its files: the built-in config tree and the cache of generated data and builds.
Standard library only, so that any module may ask."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CONFIG_DIR", "cache_dir"]

CONFIG_DIR = Path(__file__).resolve().parent / "conf"
"""The built-in Hydra config tree (``conf/`` inside the package)."""


def cache_dir() -> Path:
    """Where generated data and compiled ops live: ``$OBJMTL_CACHE`` or ``~/.cache/objmtl``."""
    return Path(os.environ.get("OBJMTL_CACHE") or Path.home() / ".cache" / "objmtl")
