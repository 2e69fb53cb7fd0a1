"""Reading checkpoints safely, and moving weights between them."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from objmtl.errors import UserError

__all__ = ["config_from_checkpoint", "find_checkpoint", "load_checkpoint", "load_own_weights", "load_weights",
           "state_dict_of"]

log = logging.getLogger(__name__)


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run directory's best checkpoint (else its last)."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.ckpt", "last.ckpt"):
            if (path / "checkpoints" / name).is_file():
                return path / "checkpoints" / name
        raise UserError(f"{path}: no checkpoints/best.ckpt or checkpoints/last.ckpt in this run directory")
    if not path.exists():
        raise UserError(f"{path}: no such run directory or checkpoint")
    return path


def load_checkpoint(path: str | Path, *, trust: bool = False) -> dict[str, Any]:
    """``torch.load(weights_only=True)``: a checkpoint needing arbitrary pickled objects is refused.

    ``trust=True`` (``--trust`` on the command line) unpickles anything: only for files whose
    source you trust, since unpickling can run code.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint file")
    with open(path, "rb") as f:
        magic = f.read(4)
    if not (magic.startswith(b"PK") or magic[:1] == b"\x80"):  # torch's zip format, or a legacy pickle
        raise UserError(f"{path}: not a checkpoint (neither torch's zip format nor a pickle)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: refused: it holds objects that safe (weights_only) loading does not allow "
                        f"({first[:160]}); pass --trust only if you trust its source") from None
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file fails in many ways inside torch
        raise UserError(f"{path}: not a readable checkpoint ({type(e).__name__}: {str(e)[:160]})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path}: holds a {type(obj).__name__}, not a checkpoint dict")
    return obj


def config_from_checkpoint(ckpt: dict[str, Any], path: str | Path = "checkpoint") -> dict[str, Any]:
    """The run config objmtl stores in every checkpoint it writes."""
    config = (ckpt.get("objmtl") or {}).get("config")
    if not config:
        raise UserError(f"{path}: no objmtl config inside (was it written by objmtl-train?)")
    return config


def state_dict_of(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model's weights from a Lightning checkpoint, a ``{"model": ...}`` file or a bare state dict."""
    lightning = isinstance(ckpt.get("state_dict"), dict)
    for key in ("state_dict", "model"):
        if isinstance(ckpt.get(key), dict):
            ckpt = ckpt[key]
            break
    sd = {k: v for k, v in ckpt.items() if isinstance(v, torch.Tensor)}
    if lightning and any(k.startswith("model.") for k in sd):  # the task's own (loss-only) weights are not the model's
        sd = {k: v for k, v in sd.items() if k.startswith("model.")}
    for prefix in ("model.", "module."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def load_own_weights(model: nn.Module, ckpt: dict[str, Any], path: str | Path) -> None:
    """Loads a checkpoint's weights into the model its own config built (all of them, strictly)."""
    try:
        model.load_state_dict(state_dict_of(ckpt))
    except RuntimeError as e:
        raise UserError(f"{path}: its weights do not fit its own config's model "
                        f"({str(e).strip().splitlines()[0]})") from None


def load_weights(model: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Loads what fits (fine-tuning), and reports missing, unexpected and shape-mismatched keys."""
    sd = state_dict_of(load_checkpoint(path))
    own = model.state_dict()
    mismatched = [k for k, v in sd.items() if k in own and own[k].shape != v.shape]
    for k in mismatched:
        del sd[k]
    result = model.load_state_dict(sd, strict=False)
    report = {"missing": list(result.missing_keys), "unexpected": list(result.unexpected_keys),
              "mismatched": mismatched}
    loaded = len(sd) - len(report["unexpected"])
    print(f"load_from {path}: loaded {loaded} tensors")
    for kind, keys in report.items():
        if keys:
            shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
            print(f"  {kind} keys: {shown}")
    return report
