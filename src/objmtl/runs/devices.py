"""Devices, said plainly: asking for GPUs where none is visible stops in one line that says what to type.

Lightning on a CPU-only machine either fails deep inside (``No supported gpu backend found!``) or, for
``trainer.devices=4`` with ``accelerator: auto``, quietly starts four CPU processes that share the
machine's cores. Both are checked before anything is built.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from objmtl.cpus import usable_cpus
from objmtl.errors import UserError

__all__ = ["check_eval_devices", "check_train_devices", "gpu_visible"]

log = logging.getLogger(__name__)

_GPU_NAMES = ("gpu", "cuda", "mps")


def gpu_visible() -> bool:
    import torch

    if torch.cuda.is_available():
        return True
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def _count(devices: Any) -> int | None:
    """The number of devices a ``devices`` value asks for; None for ``auto`` / -1 (all of them)."""
    if isinstance(devices, str):
        text = devices.strip()
        if text in ("auto", "-1"):
            return None
        if "," in text:
            return len([d for d in text.split(",") if d.strip()])
        return int(text) if text.isdigit() else None
    if isinstance(devices, int):
        return None if devices == -1 else devices
    try:
        return len(devices)
    except TypeError:
        return None


def _is_launcher() -> bool:
    """True in the process the user started (not in the DDP processes it spawns)."""
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("RANK", "0") == "0"


def check_train_devices(trainer: Any, *, choice: str | None = None) -> None:
    """Refuses GPU settings with no GPU visible; warns once when N CPU processes share fewer cores.

    ``trainer`` is the ``trainer`` config node, ``choice`` the ``trainer=`` option typed (if any).
    """
    accelerator = str(trainer.get("accelerator", "auto")).lower()
    n = _count(trainer.get("devices", 1))
    strategy = str(trainer.get("strategy", "auto")).lower()
    cores = usable_cpus()
    if accelerator == "cpu":
        if n is not None and n > 1 and _is_launcher():
            per = max(1, cores // n)
            log.warning("trainer.devices=%d on CPU: %d gloo processes share %d usable core%s (%d thread%s each)",
                        n, n, cores, "" if cores == 1 else "s", per, "" if per == 1 else "s")
        return
    if gpu_visible():
        return
    asked = n if n and n > 1 else 2
    instead = f"type trainer=ddp_cpu trainer.devices={asked} for {asked} CPU processes, or trainer=cpu for one"
    if accelerator in _GPU_NAMES:
        name = f"trainer={choice}" if choice in ("gpu", "ddp") else f"trainer.accelerator={accelerator}"
        raise UserError(f"{name}: no GPU is visible (torch.cuda.is_available() is false); {instead}")
    if n is not None and n > 1 or (n is None and strategy.startswith("ddp")):
        shown = trainer.get("devices")
        many = f"{n} CPU processes" if n else "one CPU process per core"
        raise UserError(f"trainer.devices={shown}: no GPU is visible, so this would start {many} sharing {cores} "
                        f"core{'' if cores == 1 else 's'}; {instead}")


def check_eval_devices(*, accelerator: str, devices: int) -> None:
    """The same rules for ``objmtl-test --accelerator/--devices``."""
    accelerator = accelerator.lower()
    if accelerator == "cpu" or gpu_visible():
        return
    if accelerator in _GPU_NAMES:
        raise UserError(f"--accelerator {accelerator}: no GPU is visible (torch.cuda.is_available() is false); "
                        f"drop it, or use --accelerator cpu")
    if devices > 1:
        cores = usable_cpus()
        raise UserError(f"--devices {devices}: no GPU is visible; for {devices} CPU processes (gloo, sharing "
                        f"{cores} core{'' if cores == 1 else 's'}) add --accelerator cpu")
