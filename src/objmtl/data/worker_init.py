"""What every DataLoader worker does first: leave Ctrl-C to the main process.

A terminal sends SIGINT to the whole foreground process group, loader workers included; each would
print its own ``KeyboardInterrupt`` traceback while the main process shuts them down anyway.
"""

from __future__ import annotations

import os
import signal

__all__ = ["worker_init"]


def worker_init(worker_id: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Lightning adds its own seeding init only to loaders without one: do what it would have done
    if os.environ.get("PL_SEED_WORKERS") == "1":
        from lightning.fabric.utilities.seed import pl_worker_init_function

        pl_worker_init_function(worker_id)
