"""``key=value`` overrides applied to a config stored with a run or a checkpoint."""

from __future__ import annotations

from collections.abc import Sequence

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError

from objmtl.errors import UserError

__all__ = ["GROUPS", "apply_overrides"]

GROUPS = ("task", "model", "data", "trainer", "optim", "sched", "callbacks", "logger", "paths", "hydra",
          "experiment", "debug")


def apply_overrides(cfg: DictConfig, overrides: Sequence[str], *, why: str) -> None:
    """Sets ``key=value`` items (YAML values) on ``cfg``; ``+key=value`` may add a key.

    A key the stored config does not have is a :class:`UserError` (a typo, most likely), and so
    is a config group: groups are fixed when a run starts. ``resume``, ``ckpt_path`` and ``hydra.*``
    items are skipped (they were acted on already).
    """
    for item in overrides:
        key, sep, value = item.partition("=")
        adding = key.startswith("+")
        key = key.lstrip("+")
        if not sep or key.startswith("~") or key.split(".")[0] in ("resume", "ckpt_path", "hydra"):
            continue
        if key in GROUPS:
            raise UserError(f"{why}: '{item}' would change the config group {key}, which is stored with "
                            f"the run; override fields instead (e.g. trainer.max_epochs=20)")
        try:
            parsed = yaml.safe_load(value) if value else None
        except yaml.YAMLError:
            parsed = value
        if not adding and OmegaConf.select(cfg, key, default=_MISSING) is _MISSING:
            raise UserError(f"{why}: '{key}' is not a key of the stored config (add one with +{key}=...)")
        try:
            OmegaConf.update(cfg, key, parsed, force_add=adding)
        except ConfigKeyError as e:
            raise UserError(f"{why}: '{item}': {str(e).splitlines()[0]}") from None


_MISSING = object()
