"""Ctrl-C during training: one line saying where the run stopped and how to go on.

Lightning catches the KeyboardInterrupt, tears the run down (loader workers, DDP processes) and calls
``sys.exit(1)``; its own "Detected KeyboardInterrupt" notice is filtered in :mod:`objmtl.runs.quiet`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

__all__ = ["interrupted_message", "report_interrupted"]


def _last_saved_step(trainer: Any) -> int | None:
    steps = [getattr(cb, "_last_global_step_saved", None) for cb in getattr(trainer, "checkpoint_callbacks", [])
             if getattr(cb, "filename", None) == "last"]
    steps = [s for s in steps if isinstance(s, int) and s > 0]
    return max(steps) if steps else None


def interrupted_message(trainer: Any, run_dir: Path) -> str:
    step = int(trainer.global_step)
    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return (f"interrupted at step {step}, before any checkpoint was written: nothing to resume "
                f"(checkpoint_every_n_steps=N writes checkpoints/last.ckpt every N steps)")
    saved = _last_saved_step(trainer)
    where = f" (its last checkpoint is from step {saved})" if saved is not None and saved != step else ""
    return f"interrupted at step {step}; resume with objmtl-train resume={run_dir}{where}"


def report_interrupted(trainer: Any, run_dir: Path) -> None:
    """Prints the line on rank 0 and exits with 130, the status of a process ended by SIGINT."""
    if trainer.is_global_zero:
        print(interrupted_message(trainer, run_dir), file=sys.stderr)
    sys.exit(130)
