"""What :class:`~objmtl.data.datamodule.ShardDataModule` calls on a task kind's sample adapter.

A task kind names its adapter in ``conf/kind/<name>.yaml`` (``samples``); the data module builds one per
stage and asks the class what the shards must carry and which evaluation loaders to serve. A kind made of
other kinds' heads (``task=mtl``) overrides the class methods; a single kind keeps these defaults.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

__all__ = ["SampleAdapter"]


class SampleAdapter:
    """Base of the sample adapters: ``adapter(decoded_sample) -> item`` and ``adapter.collate(items)``.

    Attributes:
        task: the kind's name, for messages.
        meta_task: the annotation kind ``meta.json`` must list, when it is not :attr:`task` (ssl: ``cls``,
            for its k-NN).
        knn_bank: the data module also serves the training split, read with the evaluation transform, as
            the first loader of each evaluation (ssl's k-NN memory bank).
    """

    task: ClassVar[str] = ""
    meta_task: ClassVar[str | None] = None
    knn_bank: ClassVar[bool] = False

    def __call__(self, sample: dict[str, Any]) -> Any:
        raise NotImplementedError

    @staticmethod
    def collate(batch: list[Any]) -> Any:
        raise NotImplementedError

    @classmethod
    def build(cls, *, transform: Any, heads: Sequence[str] | None = None,
              parts: Mapping[str, type] | None = None) -> SampleAdapter:
        """The adapter of one stage, with that stage's transform (a multi-head kind: ``{head: pipeline}``)."""
        return cls(transform=transform)  # type: ignore[call-arg]

    @classmethod
    def check_heads(cls, heads: Sequence[str] | None, parts: Mapping[str, type] | None) -> None:
        """A UserError for a ``task.heads`` the kind cannot train (a single kind has no heads to check)."""

    @classmethod
    def required(cls, heads: Sequence[str] | None) -> dict[str, str]:
        """``{annotation kind the shards must carry: who needs it, for the error}``."""
        kind = cls.meta_task or cls.task
        return {kind: f"task={cls.task}"}

    @classmethod
    def eval_views(cls, heads: Sequence[str] | None) -> list[str | None]:
        """One evaluation loader per entry: ``None`` for the whole sample, a head's name for its view."""
        return [None]

    @staticmethod
    def carried_by(sample: dict[str, Any]) -> bool:
        """Whether ``sample`` holds the annotations this kind trains on (a multi-head kind routes by it)."""
        return True

