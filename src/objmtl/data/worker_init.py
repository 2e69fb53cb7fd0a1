"""What every DataLoader worker does first: leave Ctrl-C to the main process.

A terminal sends SIGINT to the whole foreground process group, loader workers included; each would
print its own ``KeyboardInterrupt`` traceback while the main process shuts them down anyway. A worker
notes the signal instead, and after it stays silent about errors of its threads (multiprocessing's
resource sharer complains when the main process goes away first).
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType, TracebackType

__all__ = ["worker_init"]

_interrupted = False


def _note_interrupt(signum: int, frame: FrameType | None) -> None:
    global _interrupted
    _interrupted = True


def _quiet_after_interrupt(hook):  # noqa: ANN001, ANN202 - wraps sys.excepthook
    def excepthook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        if not _interrupted:
            hook(kind, value, tb)

    return excepthook


def worker_init(worker_id: int) -> None:
    signal.signal(signal.SIGINT, _note_interrupt)
    sys.excepthook = _quiet_after_interrupt(sys.excepthook)
    # Lightning adds its own seeding init only to loaders without one: do what it would have done
    if os.environ.get("PL_SEED_WORKERS") == "1":
        from lightning.fabric.utilities.seed import pl_worker_init_function

        pl_worker_init_function(worker_id)
