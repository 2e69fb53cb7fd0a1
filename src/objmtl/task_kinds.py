"""A task kind's pieces outside its LightningModule, as its config names them.

Each task config (``conf/task/<name>.yaml``) brings ``conf/kind/<name>.yaml`` as ``task.kind``: one entry
per piece that code on another floor calls (``samples``: the data module's sample adapter; ``outputs``:
``objmtl-test``'s writer), each a ``_target_``. A kind made of other kinds (``task=mtl``) holds theirs under
``task.kind.heads``. Each consumer instantiates only its own piece, so the data floor never imports the
runs floor's writers and no module keeps a table from task names to classes.

A run config saved before ``task.kind`` existed names only ``task.name``: :func:`kind_of` then reads the
built-in ``conf/kind/<name>.yaml`` (and a head's file per ``task.heads`` entry), the same file that
``task=<name>`` would compose today.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from objmtl.errors import UserError
from objmtl.locations import CONFIG_DIR

__all__ = ["builtin_kind", "head_pieces", "kind_of", "piece"]


def builtin_kind(name: str, *, heads: Sequence[str] | None = None) -> DictConfig:
    """``conf/kind/<name>.yaml`` of the package; with ``heads``, each head's file under ``heads``."""
    path = CONFIG_DIR / "kind" / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in path.parent.glob("*.yaml")))
        raise UserError(f"task.name={name}: no task.kind in the config and no built-in conf/kind/{name}.yaml "
                        f"(built in: {known})")
    kind = OmegaConf.load(path)
    assert isinstance(kind, DictConfig)
    if heads:
        kind.heads = {str(h): builtin_kind(str(h)) for h in heads}
    return kind


def kind_of(task: Mapping[str, Any]) -> DictConfig:
    """The ``task.kind`` of a task config (``cfg.task``), or the built-in one for its ``name``."""
    kind = task.get("kind")
    if kind is not None:
        return kind if isinstance(kind, DictConfig) else OmegaConf.create(kind)
    heads = task.get("heads")
    return builtin_kind(str(task["name"]), heads=list(heads) if heads is not None else None)


def piece(kind: Mapping[str, Any], what: str) -> Any:
    """The kind's ``what`` piece, instantiated from its ``_target_`` (for a class: ``hydra.utils.get_class``)."""
    if kind.get(what) is None:
        raise UserError(f"task.kind.{what}: not set (the task kind's config names no {what} piece; "
                        "see conf/kind/*.yaml)")
    return instantiate(kind[what])


def head_pieces(kind: Mapping[str, Any], what: str) -> dict[str, Any]:
    """``{head: its what piece}`` for every head the kind knows (``{}`` for a kind without heads)."""
    return {str(h): piece(k, what) for h, k in (kind.get("heads") or {}).items()}
