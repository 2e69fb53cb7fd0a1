"""What ``objmtl-test`` does per task type beyond the metrics: ``--eval`` groups, ``--out``, ``--show-dir``.

Each task kind has an :class:`EvalOutputs` subclass (``objmtl.runs.<task>_outputs``), named by its config
(``task.kind.outputs`` in ``conf/kind/<task>.yaml``). It is a Lightning callback: during evaluation it receives what the task's
``validation_step`` / ``test_step`` return and keeps, per image, what ``--out`` and ``--show-dir``
need (only when one of them was asked for: ``keep``). Under DDP each rank collects its own images and
at the end of the epoch rank 0 gathers every rank's items, in rank order (the shard reader gives each
rank a contiguous range, so that is one process's order). :func:`objmtl.runs.evaluate.evaluate` then
calls :meth:`~EvalOutputs.write` and :meth:`~EvalOutputs.show` on rank 0.

A new task kind adds its subclass and names it in its ``conf/kind`` file; evaluate() itself does not change.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import numpy as np
import torch.distributed as dist
from PIL import Image

from objmtl.data.schema import Meta
from objmtl.data.shard_reader import ShardDataset
from objmtl.errors import UserError

__all__ = ["EvalOutputs", "captioned_images", "raw_samples"]


def raw_samples(roots: Sequence[Path], split: str) -> Iterator[dict[str, Any]]:
    """Decoded, untransformed samples of ``split`` in each shard set (single process, in order):
    the original pixels that ``--show-dir`` pictures are drawn on."""
    for root in roots:
        yield from ShardDataset(root=root, split=split, world_size=1, rank=0)


def captioned_images(rows: Sequence[dict[str, Any]], roots: Sequence[Path], split: str, *,
                     min_side: int = 160) -> Iterator[tuple[dict[str, Any], np.ndarray]]:
    """Each collected row (``{"key": ...}``) with its sample's original image, enlarged (nearest) to at least
    ``min_side`` when smaller, in shard order; stops once every row has had its image. What the whole-image
    kinds' ``--show-dir`` captions are drawn under."""
    by_key = {str(r["key"]): r for r in rows}
    for sample in raw_samples(roots, split):
        row = by_key.pop(str(sample["key"]), None)
        if row is None:
            continue
        image = Image.fromarray(sample["image"])
        if min(image.size) < min_side:
            scale = min_side / min(image.size)
            image = image.resize((round(image.width * scale), round(image.height * scale)), Image.NEAREST)
        yield row, np.asarray(image)
        if not by_key:
            return


class EvalOutputs(L.Callback):
    """Collects per-image outputs in evaluation; writes ``--out`` and ``--show-dir``.

    Subclasses set :attr:`task`, :attr:`eval_groups` (``--eval`` name -> metric names it prints;
    empty: ``--eval`` is not offered and every metric prints) and :attr:`default_groups`, and
    implement :meth:`collect` and :meth:`write`; :meth:`show` when the task draws pictures.
    :attr:`out_name`: the file or folder its ``--out`` takes inside a multi-task run's ``--out DIR``.

    Args:
        keep: collect per-image outputs (``--out`` or ``--show-dir`` was asked for).
        parts: a multi-head kind's ``{head: that head's EvalOutputs class}`` (``task.kind.heads``).
    """

    task: ClassVar[str] = ""
    eval_groups: ClassVar[dict[str, tuple[str, ...]]] = {}
    default_groups: ClassVar[tuple[str, ...]] = ()
    out_help: ClassVar[str] = ""
    out_name: ClassVar[str] = ""

    def __init__(self, *, keep: bool = False, parts: dict[str, type[EvalOutputs]] | None = None) -> None:
        self.keep = keep
        self.part_types = dict(parts or {})
        self.items: list[dict[str, Any]] = []

    # ---- collecting ----

    def collect(self, outputs: Any, batch: Any) -> None:
        """Appends one dict per image of ``batch`` to :attr:`items` (numpy, on CPU)."""
        raise NotImplementedError

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                                batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.keep and not trainer.sanity_checking and outputs is not None:
            self.collect(outputs, batch)

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                          batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.keep and outputs is not None:
            self.collect(outputs, batch)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.gather()

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.gather()

    def gather(self) -> None:
        """Under DDP: rank 0's :attr:`items` become every rank's, in rank order; the others' are emptied."""
        if not (self.keep and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return
        parts: list[list[dict[str, Any]] | None] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, self.items)
        self.items = [item for part in parts for item in (part or [])] if dist.get_rank() == 0 else []

    @classmethod
    def check_request(cls, *, files: bool) -> None:
        """A UserError, before anything loads, when ``files`` (``--out`` / ``--show-dir``) are asked of a task
        type that writes none."""

    # ---- metrics ----

    @classmethod
    def check_groups(cls, groups: Sequence[str] | None) -> None:
        """A UserError for an ``--eval`` name this task type does not have."""
        if not groups:
            return
        if not cls.eval_groups:
            raise UserError(f"--eval: task={cls.task} prints all its metrics (no groups to pick)")
        bad = [g for g in groups if g not in cls.eval_groups]
        if bad:
            raise UserError(f"--eval {bad[0]}: use {', '.join(cls.eval_groups)}")

    @classmethod
    def select(cls, metrics: dict[str, float], groups: Sequence[str] | None) -> dict[str, float]:
        """The ``STAGE/name`` metrics of the chosen groups (default :attr:`default_groups`), and every
        metric outside all groups."""
        groups = groups or cls.default_groups
        if not cls.eval_groups or not groups:
            return dict(metrics)
        grouped = {k for keys in cls.eval_groups.values() for k in keys}
        chosen = {k for g in groups for k in cls.eval_groups[g]}
        return {k: v for k, v in metrics.items() if k.rsplit("/", 1)[-1] in chosen
                or k.rsplit("/", 1)[-1] not in grouped}

    def report(self, task: L.LightningModule, split: str) -> dict[str, Any]:
        """Extra entries of the metrics JSON (e.g. a per-class table); printed by :meth:`print_report`."""
        return {}

    def print_report(self, report: dict[str, Any]) -> None:
        """Prints the extra entries of :meth:`report` (nothing by default)."""

    # ---- files ----

    def write(self, out: Path, *, meta: Meta, class_names: Sequence[str]) -> str:
        """Writes the collected predictions to ``out``; returns the line to print."""
        raise NotImplementedError

    def show(self, out_dir: Path, *, roots: Sequence[Path], split: str, class_names: Sequence[str],
             score_thr: float) -> int:
        """Draws the collected predictions into ``out_dir``; returns the number of pictures."""
        raise UserError(f"--show-dir: task={self.task} draws no pictures yet")
