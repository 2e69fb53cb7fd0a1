"""ONNX Runtime against PyTorch on real images: the proof that an exported file computes what the model does.

Both sides run the same graph module (:mod:`objmtl.export.graphs`) on the same preprocessed batch
(:class:`~objmtl.export.preprocess.Preprocessor`): PyTorch eagerly, onnxruntime from the file.
Float outputs are compared by max absolute difference; integer outputs (labels, counts) must be
equal. For in-graph NMS only the filled detection slots are compared (count per image first), each
PyTorch detection against its closest onnxruntime one of the same label (tied scores may swap places).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["OrtRunner", "Parity", "compare", "verify"]


class OrtRunner:
    """An onnxruntime session on CPU; called with the graph's inputs in order (one array, or a tuple for a
    multi-task graph with person crops)."""

    def __init__(self, path: str | Path, *, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.input = self.inputs[0]

    def __call__(self, batch: np.ndarray | tuple[np.ndarray, ...]) -> list[np.ndarray]:
        arrays = batch if isinstance(batch, tuple) else (batch,)
        return list(self.session.run(None, dict(zip(self.inputs, arrays, strict=True))))


def torch_outputs(graph: nn.Module, batch: np.ndarray | tuple[np.ndarray, ...]) -> list[np.ndarray]:
    """The graph run eagerly on ``batch`` (a tuple: several inputs), as numpy arrays."""
    arrays = batch if isinstance(batch, tuple) else (batch,)
    with torch.no_grad():
        out = graph(*(torch.from_numpy(a) for a in arrays))
    return [o.numpy() for o in (out if isinstance(out, tuple | list) else (out,))]


@dataclass
class Parity:
    """Per output name: the max abs difference (floats) or the count of unequal values (integers)."""

    diffs: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def ok(self, tolerance: float) -> bool:
        return not self.problems and all(v <= tolerance for v in self.diffs.values())


def _pairing(ours: Sequence[np.ndarray], theirs: Sequence[np.ndarray], image: int, n: int) -> np.ndarray:
    """The order of onnxruntime's first ``n`` detections of ``image`` that pairs each with PyTorch's.

    Detections whose scores tie (common in a barely trained model) may leave NMS in either order, since the
    two runtimes' scores differ in the last bits; each PyTorch detection is paired with the one of the same
    label whose box and score are closest (an assignment, so none is used twice)."""
    from scipy.optimize import linear_sum_assignment

    if n == 0:
        return np.zeros(0, dtype=np.int64)
    boxes_a, boxes_b = ours[0][image, :n].astype(np.float64), theirs[0][image, :n].astype(np.float64)
    cost = np.abs(boxes_a[:, None, :] - boxes_b[None, :, :]).max(-1)
    cost += np.abs(ours[1][image, :n, None].astype(np.float64) - theirs[1][image, None, :n].astype(np.float64))
    cost += 1e9 * (ours[2][image, :n, None] != theirs[2][image, None, :n])
    rows, cols = linear_sum_assignment(cost)
    return cols[np.argsort(rows)]


def compare(ours: Sequence[np.ndarray], theirs: Sequence[np.ndarray], *, names: Sequence[str],
            detections: bool | Sequence[Sequence[str]] = False) -> Parity:
    """Compares PyTorch (``ours``) and onnxruntime (``theirs``) outputs of one batch. ``detections``: the
    outputs are one in-graph-NMS group (boxes, scores, labels, count); or a list of such groups' names among
    other outputs (a multi-task graph)."""
    if detections and not isinstance(detections, bool):
        parity, at = Parity(), {n: i for i, n in enumerate(names)}
        grouped = [n for group in detections for n in group]
        plain = [n for n in names if n not in grouped]
        for sub_names, is_group in [(list(g), True) for g in detections] + [(plain, False)]:
            part = compare([ours[at[n]] for n in sub_names], [theirs[at[n]] for n in sub_names], names=sub_names,
                           detections=is_group)
            parity.diffs.update(part.diffs)
            parity.problems.extend(part.problems)
        parity.diffs = {n: parity.diffs[n] for n in names if n in parity.diffs}
        return parity
    parity = Parity()
    if detections:  # boxes, scores, labels, counts: compare the filled slots
        counts_a, counts_b = ours[3], theirs[3]
        if not np.array_equal(counts_a, counts_b):
            parity.problems.append(f"{names[3]}: detections per image differ ({counts_a.tolist()} vs {counts_b.tolist()})")
            return parity
        orders = [_pairing(ours, theirs, b, int(n)) for b, n in enumerate(counts_a)]
        for i, name in enumerate(names[:3]):
            a = np.concatenate([ours[i][b, :n] for b, n in enumerate(counts_a)])
            b_ = np.concatenate([theirs[i][b, order] for b, order in enumerate(orders)])
            if np.issubdtype(a.dtype, np.integer):
                unequal = int((a != b_).sum())
                if unequal:
                    parity.problems.append(f"{name}: {unequal} values differ")
                parity.diffs[name] = float(unequal)
            else:
                parity.diffs[name] = float(np.abs(a - b_).max()) if a.size else 0.0
        parity.diffs[names[3]] = 0.0
        return parity
    for name, a, b in zip(names, ours, theirs, strict=True):
        if a.shape != b.shape:
            parity.problems.append(f"{name}: shape {a.shape} vs {b.shape}")
        elif np.issubdtype(a.dtype, np.integer):
            unequal = int((a != b).sum())
            if unequal:
                parity.problems.append(f"{name}: {unequal} values differ")
            parity.diffs[name] = float(unequal)
        else:
            parity.diffs[name] = float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()) if a.size else 0.0
    return parity


def verify(*, graph: nn.Module, onnx_path: str | Path, batches: Sequence[np.ndarray | tuple[np.ndarray, ...]],
           names: Sequence[str], detections: bool | Sequence[Sequence[str]] = False
           ) -> list[tuple[tuple[int, ...], Parity]]:
    """Runs both sides on each batch; returns (the first input's shape, :class:`Parity`) per batch."""
    runner = OrtRunner(onnx_path)
    report: list[tuple[tuple[int, ...], Any]] = []
    for batch in batches:
        first = batch[0] if isinstance(batch, tuple) else batch
        report.append((tuple(first.shape), compare(torch_outputs(graph, batch), runner(batch), names=names,
                                                   detections=detections)))
    return report
