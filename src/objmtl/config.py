"""Where the Hydra config tree lives, and the resolvers it uses.

- ``${meta:KEY}``: a field of the training shards' ``meta.json`` (``num_classes``, ``classes``,
  ``num_keypoints``, ``sigmas``, ...), so heads are sized by the data, never by a typed number.
- ``${objmtl_run_dir:RESUME,DEFAULT}``: the run directory: RESUME when resuming, else DEFAULT.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

__all__ = ["CONFIG_DIR", "register_resolvers"]

CONFIG_DIR = Path(__file__).resolve().parent / "conf"


def _meta(key: str, *, _root_: DictConfig) -> Any:
    from objmtl.data.datamodule import resolve_root
    from objmtl.data.schema import read_meta

    data = _root_.get("data") or {}
    synth = data.get("synth")
    root = resolve_root(data.get("root"), OmegaConf.to_container(synth) if synth is not None else None)
    return read_meta(root).field(key)


def _run_dir(resume: str | None, default: str) -> str:
    return str(resume) if resume else default


def register_resolvers() -> None:
    """Registers the resolvers once (safe to call again)."""
    if not OmegaConf.has_resolver("meta"):
        OmegaConf.register_new_resolver("meta", _meta)
    if not OmegaConf.has_resolver("objmtl_run_dir"):
        OmegaConf.register_new_resolver("objmtl_run_dir", _run_dir)


register_resolvers()
