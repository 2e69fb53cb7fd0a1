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
    from objmtl.data.datamodule import meta_of

    data = _root_.get("data") or {}

    def plain(key: str) -> Any:
        value = data.get(key)
        return OmegaConf.to_container(value) if value is not None and not isinstance(value, str) else value

    return meta_of(data.get("root"), plain("synth"), plain("sources")).field(key)


def _run_dir(resume: str | None, default: str) -> str:
    return str(resume) if resume else default


def register_resolvers() -> None:
    """Registers the resolvers once (safe to call again)."""
    if not OmegaConf.has_resolver("meta"):
        OmegaConf.register_new_resolver("meta", _meta)
    if not OmegaConf.has_resolver("objmtl_run_dir"):
        OmegaConf.register_new_resolver("objmtl_run_dir", _run_dir)


register_resolvers()
