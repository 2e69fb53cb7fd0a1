"""``objmtl-test`` outputs of a multi-task run: each head's own outputs, in a folder per head.

``--out DIR`` writes ``DIR/cls.json``, ``DIR/det.json`` (COCO results), ``DIR/seg/`` (class-index PNGs)
and ``DIR/pose.json`` (COCO keypoint results) for the heads the run has (each head's
``EvalOutputs.out_name``, from ``task.kind.heads``); ``--show-dir DIR`` draws into
``DIR/<head>/``. Evaluation reads one loader per head (in ``task.heads`` order), so a batch's loader index
names its head.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import lightning as L

from objmtl.data.schema import Meta
from objmtl.errors import UserError
from objmtl.runs.outputs import EvalOutputs

__all__ = ["MultiTaskOutputs"]


def _has_content(value: Any) -> bool:
    """Whether a report holds anything to print (a non-zero count, a row)."""
    if isinstance(value, dict):
        return any(_has_content(v) for v in value.values())
    return bool(value)


class MultiTaskOutputs(EvalOutputs):
    task = "mtl"
    out_help: ClassVar[str] = "mtl: a folder: cls.json, det.json, seg/ (PNGs), pose.json, one per head"

    def __init__(self, *, keep: bool = False, parts: dict[str, type[EvalOutputs]] | None = None) -> None:
        super().__init__(keep=keep, parts=parts)
        self.parts: dict[str, EvalOutputs] = {}
        self.class_names: dict[str, Sequence[str]] = {}

    def _part(self, pl_module: L.LightningModule, dataloader_idx: int) -> tuple[str, EvalOutputs]:
        head = pl_module.head_names[dataloader_idx]
        if head not in self.part_types:
            raise UserError(f"task.kind.heads.{head}.outputs: not set (objmtl-test passes each head's outputs "
                            "class from the run config)")
        if head not in self.parts:
            self.parts[head] = self.part_types[head](keep=self.keep)
            self.class_names[head] = list(getattr(pl_module.tasks[head], "class_names", None) or [])
        return head, self.parts[head]

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for i in range(len(pl_module.head_names)):  # every head on every rank: gather() is a collective per head
            self._part(pl_module, i)

    def _collect(self, pl_module: L.LightningModule, outputs: Any, batch: Any, dataloader_idx: int) -> None:
        if self.keep and outputs is not None:
            head, part = self._part(pl_module, dataloader_idx)
            part.collect(outputs, batch[head])

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                                batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if not trainer.sanity_checking:
            self._collect(pl_module, outputs, batch, dataloader_idx)

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                          batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._collect(pl_module, outputs, batch, dataloader_idx)

    def gather(self) -> None:
        for part in self.parts.values():
            part.gather()

    def report(self, task: L.LightningModule, split: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for head, sub in task.tasks.items():
            extra = (self.parts.get(head) or self.part_types[head]()).report(sub, split)
            out.update({f"{head}/{k}": v for k, v in extra.items()})
        return out

    def print_report(self, report: dict[str, Any]) -> None:
        for head, part_type in self.part_types.items():
            extra = {k.split("/", 1)[1]: v for k, v in report.items() if k.startswith(f"{head}/")}
            if _has_content(extra):
                print(f"[{head}]")
                part_type().print_report(extra)

    def write(self, out: Path, *, meta: Meta, class_names: Sequence[str]) -> str:
        out.mkdir(parents=True, exist_ok=True)
        lines = [part.write(out / part.out_name, meta=meta, class_names=self.class_names[head])
                 for head, part in self.parts.items()]
        return "\n".join(lines)

    def show(self, out_dir: Path, *, roots: Sequence[Path], split: str, class_names: Sequence[str],
             score_thr: float) -> int:
        return sum(part.show(out_dir / head, roots=roots, split=split, class_names=self.class_names[head],
                             score_thr=score_thr) for head, part in self.parts.items())
