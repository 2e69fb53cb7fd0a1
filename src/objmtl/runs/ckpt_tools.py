"""Checkpoint tools behind ``objmtl-ckpt``: show, change-key, rename, wash.

Every read goes through :func:`objmtl.checkpoint.load_checkpoint` (``torch.load`` with
``weights_only=True``; ``trust=True`` is the one way to unpickle arbitrary objects). The weights of
a checkpoint are found where :func:`weights_key` says: Lightning's ``state_dict``, a ``model``
entry, or the top level of a bare state dict (``-`` names the top level on the command line).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from objmtl.checkpoint import load_checkpoint
from objmtl.errors import UserError
from objmtl.runs.atomic_checkpoint_io import atomic_torch_save

__all__ = ["TOP_LEVEL", "WASH_DROP", "change_key", "rename", "save_checkpoint", "show", "wash", "weights_key"]

TOP_LEVEL = "-"
"""The name of a bare state dict's top level (weights not under any key)."""

WASH_DROP = r"(^|\.)(ema|ema_model|model_ema|teacher|momentum_encoder|projector|predictor_head|criterion|loss_fn|log_vars)(\.|_|$)"
"""Parameter names ``wash`` drops by default: EMA / teacher copies, SSL projectors and loss-only modules and
parameters (``task=mtl``'s learned loss weights, ``log_vars``)."""

def _is_weights(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def weights_key(ckpt: dict[str, Any]) -> str:
    """Where the weights live: ``state_dict``, ``model``, another key holding only tensors, or ``-``."""
    for key in ("state_dict", "model"):
        if _is_weights(ckpt.get(key)):
            return key
    if _is_weights(ckpt):
        return TOP_LEVEL
    for key, value in ckpt.items():
        if _is_weights(value):
            return key
    raise UserError("no weights found: no top-level key holds a dict of tensors")


def _weights(ckpt: dict[str, Any], key: str) -> dict[str, torch.Tensor]:
    return ckpt if key == TOP_LEVEL else ckpt[key]


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GB"


def save_checkpoint(ckpt: dict[str, Any], out: str | Path, *, source: str | Path | None = None) -> Path:
    """Writes ``ckpt`` with ``torch.save`` (atomically: a temp file renamed); refuses to overwrite ``source``."""
    out = Path(out)
    if source is not None and out.resolve() == Path(source).resolve():
        raise UserError(f"{out}: the output would overwrite its input; give another --out")
    atomic_torch_save(ckpt, out)
    return out


def show(path: str | Path, *, depth: int | None = None, trust: bool = False) -> dict[str, Any]:
    """Prints the top-level entries and the parameter tree (shape, dtype, count, size); returns totals.

    Args:
        path: the checkpoint.
        depth: group parameters by the first ``depth`` parts of their dotted names (None: every tensor).
        trust: allow arbitrary unpickling (only for files whose source you trust).
    """
    from rich.console import Console
    from rich.table import Table

    ckpt = load_checkpoint(path, trust=trust)
    key = weights_key(ckpt)
    weights = _weights(ckpt, key)
    console = Console(width=140)
    top = Table(title=f"{path}: top-level entries")
    top.add_column("key")
    top.add_column("holds")
    for k, v in ckpt.items() if key != TOP_LEVEL else []:
        if k == key:
            desc = f"the weights: {len(v)} tensors"
        elif isinstance(v, torch.Tensor):
            desc = f"tensor {tuple(v.shape)} {v.dtype}"
        elif isinstance(v, dict):
            desc = f"dict of {len(v)}" + (" (objmtl config)" if k == "objmtl" else "")
        elif isinstance(v, list | tuple):
            desc = f"{type(v).__name__} of {len(v)}"
        else:
            desc = repr(v)[:60]
        top.add_row(k, desc)
    if key != TOP_LEVEL:
        console.print(top)

    groups: dict[str, list[torch.Tensor]] = defaultdict(list)
    for name, t in weights.items():
        groups[".".join(name.split(".")[:depth]) if depth else name].append(t)
    tree = Table(title=f"weights under {key!r}" if key != TOP_LEVEL else "weights (bare state dict)")
    for col, justify in (("name", "left"), ("shape", "left"), ("dtype", "left"), ("count", "right"),
                         ("size", "right")):
        tree.add_column(col, justify=justify)  # type: ignore[arg-type]
    for name, tensors in groups.items():
        count = sum(t.numel() for t in tensors)
        shape = str(tuple(tensors[0].shape)) if len(tensors) == 1 else f"{len(tensors)} tensors"
        dtypes = ",".join(sorted({str(t.dtype).replace("torch.", "") for t in tensors}))
        tree.add_row(name, shape, dtypes, f"{count:,}", _human(sum(_nbytes(t) for t in tensors)))
    total = {"tensors": len(weights), "count": sum(t.numel() for t in weights.values()),
             "bytes": sum(_nbytes(t) for t in weights.values()), "weights_key": key}
    tree.caption = (f"{total['tensors']} tensors, {total['count']:,} values, {_human(total['bytes'])}; "
                    f"file {_human(Path(path).stat().st_size)}")
    console.print(tree)
    return total


def change_key(path: str | Path, *, out: str | Path, src: str | None, dst: str, trust: bool = False) -> Path:
    """Moves the weights from top-level key ``src`` (default: where they are) to ``dst`` (``-``: top level)."""
    ckpt = load_checkpoint(path, trust=trust)
    src = src or weights_key(ckpt)
    if (src == TOP_LEVEL and not _is_weights(ckpt)) or (src != TOP_LEVEL and not _is_weights(ckpt.get(src))):
        raise UserError(f"{path}: key {src!r} holds no weights (keys: {', '.join(map(str, ckpt)) or 'none'})")
    if src == dst:
        raise UserError(f"--from and --to are both {src!r}: nothing to move")
    weights = dict(_weights(ckpt, src))
    if dst == TOP_LEVEL:
        new: dict[str, Any] = weights
        dropped = [k for k in ckpt if k != src] if src != TOP_LEVEL else []
        if dropped:
            print(f"note: a bare state dict keeps only the weights; dropped {', '.join(map(str, dropped))}")
    else:
        new = {} if src == TOP_LEVEL else {k: v for k, v in ckpt.items() if k != src}
        if dst in new:
            raise UserError(f"{path}: key {dst!r} exists already; choose another --to")
        new[dst] = weights
    written = save_checkpoint(new, out, source=path)
    print(f"moved {len(weights)} tensors from {src!r} to {dst!r}: {written}")
    return written


def rename(path: str | Path, *, pattern: str, replacement: str, out: str | Path | None = None,
           dry_run: bool = False, trust: bool = False) -> dict[str, str]:
    """Renames the weights by ``re.sub(pattern, replacement, name)``; prints every change.

    Returns:
        ``{old: new}`` of the names that change. Nothing is written with ``dry_run`` (or no ``out``).
    """
    try:
        regex = re.compile(pattern)
    except re.error as e:
        raise UserError(f"pattern {pattern!r}: not a regular expression ({e})") from None
    ckpt = load_checkpoint(path, trust=trust)
    key = weights_key(ckpt)
    weights = _weights(ckpt, key)
    new_names = {name: regex.sub(replacement, name) for name in weights}
    changes = {old: new for old, new in new_names.items() if old != new}
    seen: dict[str, str] = {}
    for old, new in new_names.items():
        if new in seen:
            raise UserError(f"rename: {seen[new]!r} and {old!r} would both become {new!r}")
        seen[new] = old
    for old, new in changes.items():
        print(f"{old}  ->  {new}")
    print(f"{len(changes)} of {len(weights)} names change" + (" (dry run: nothing written)" if dry_run else
                                                              " (nothing written)" if not changes else ""))
    if dry_run or not changes:
        return changes
    if out is None:
        raise UserError("rename: give --out FILE (or --dry-run to only see the changes)")
    renamed = {new_names[k]: v for k, v in weights.items()}
    result = renamed if key == TOP_LEVEL else {**ckpt, key: renamed}
    print(f"written: {save_checkpoint(result, out, source=path)}")
    return changes


def wash(path: str | Path, *, out: str | Path, strip_prefixes: Sequence[str] = ("model.",), fp16: bool = False,
         drop: str = WASH_DROP, keep_config: bool = True, trust: bool = False) -> dict[str, Any]:
    """A weights-only checkpoint for release or fine-tuning: ``{"model": weights[, "objmtl": config]}``.

    Drops optimizer and scheduler state, loops, callbacks and RNG states; weights whose names match
    ``drop`` (EMA / teacher copies, SSL projectors, loss-only modules); strips ``strip_prefixes``
    (the LightningModule's ``model.``); with ``fp16``, floating-point tensors become float16. The
    objmtl config stays (``keep_config``) so ``objmtl-test`` / export can rebuild the model from it.

    Returns:
        Sizes and counts before and after, and the dropped names.
    """
    ckpt = load_checkpoint(path, trust=trust)
    key = weights_key(ckpt)
    weights = _weights(ckpt, key)
    try:
        regex = re.compile(drop) if drop else None
    except re.error as e:
        raise UserError(f"--drop {drop!r}: not a regular expression ({e})") from None
    kept: dict[str, torch.Tensor] = {}
    dropped = []
    for name, t in weights.items():
        if regex is not None and regex.search(name):
            dropped.append(name)
            continue
        for prefix in strip_prefixes:
            if prefix and name.startswith(prefix):
                name = name[len(prefix):]
                break
        if name in kept:
            raise UserError(f"wash: two weights become {name!r} after stripping {list(strip_prefixes)}")
        kept[name] = t.half() if fp16 and t.is_floating_point() else t.clone()
    result: dict[str, Any] = {"model": kept}
    if keep_config and isinstance(ckpt.get("objmtl"), dict):
        result["objmtl"] = ckpt["objmtl"]
    written = save_checkpoint(result, out, source=path)
    before, after = Path(path).stat().st_size, written.stat().st_size
    state = [k for k in ckpt if k != key and k != "objmtl"] if key != TOP_LEVEL else []
    print(f"dropped entries: {', '.join(map(str, state)) or 'none'}")
    if key == "state_dict" and "current_model_state" in ckpt:
        print("EMA run (callbacks=ema): kept the averaged weights (state_dict), dropped the raw ones "
              "(current_model_state)")
    if dropped:
        print(f"dropped weights ({len(dropped)}): " + ", ".join(dropped[:8]) + (" ..." if len(dropped) > 8 else ""))
    print(f"size: {_human(before)} -> {_human(after)} ({after / max(before, 1):.2f}x); "
          f"{len(weights)} -> {len(kept)} tensors" + (", float16" if fp16 else "") + f"\nwritten: {written}")
    return {"bytes_before": before, "bytes_after": after, "tensors_before": len(weights), "tensors_after": len(kept),
            "dropped_weights": dropped, "dropped_entries": state}
