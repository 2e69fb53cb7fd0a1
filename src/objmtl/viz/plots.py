"""Pictures of a run: loss and metric curves, confusion matrices."""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # pyplot-free figures: no backend switch, nothing shown in notebooks

__all__ = ["plot_confusion_matrix", "plot_curves", "read_metrics_csv", "save_figure"]


def save_figure(fig: Figure, out: str | Path, *, dpi: int = 100) -> Path:
    """Lays out and writes a figure (creating the folder); returns its path."""
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    return out


def plot_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], out: str | Path,
                          *, normalize: bool = True) -> Path:
    """Rows are true classes, columns predictions; cells show counts and, coloured, row fractions."""
    matrix = np.asarray(matrix, dtype=np.float64)
    k = len(class_names)
    rows = matrix.sum(1, keepdims=True)
    frac = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0) if normalize else matrix
    size = min(2 + 0.45 * k, 24)
    fig = Figure(figsize=(size + 1.5, size))
    ax = fig.subplots()
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class" if normalize else "count")
    ax.set(xticks=range(k), yticks=range(k), xlabel="predicted", ylabel="true",
           title=f"confusion matrix (accuracy {np.trace(matrix) / max(matrix.sum(), 1):.3f})")
    ax.set_xticklabels(class_names, rotation=45, ha="right")
    ax.set_yticklabels(class_names)
    if k <= 30:
        for i in range(k):
            for j in range(k):
                if matrix[i, j]:
                    ax.text(j, i, f"{int(matrix[i, j])}", ha="center", va="center", fontsize=8,
                            color="white" if frac[i, j] > 0.5 else "black")
    return save_figure(fig, out)


def _by_epoch(name: str) -> bool:
    return name.startswith(("val/", "test/", "data/")) or name.endswith("_epoch")


def read_metrics_csv(path: str | Path) -> dict[str, list[tuple[float, float]]]:
    """Lightning's CSVLogger file -> ``{metric: [(epoch or step, value), ...]}``.

    Evaluation metrics (``val/``, ``test/``, ``data/``, ``*_epoch``) are keyed by epoch, the rest by step.
    """
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if key in ("epoch", "step") or value in ("", None):
                    continue
                x = row.get("epoch") if _by_epoch(key) else row.get("step")
                try:
                    series[key].append((float(x or 0), float(value)))
                except ValueError:
                    continue
    return dict(series)


def plot_curves(metrics_csv: str | Path, out: str | Path) -> Path | None:
    """One panel per metric of a CSVLogger file; returns None when there is nothing to plot."""
    series = {k: v for k, v in read_metrics_csv(metrics_csv).items() if len(v) > 0}
    if not series:
        return None
    names = sorted(series, key=lambda k: (not k.startswith("train/"), k))
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig = Figure(figsize=(4.5 * cols, 3.2 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        xs, ys = zip(*series[name], strict=True)
        by_epoch = _by_epoch(name)
        ax.plot(xs, ys, marker="o" if (by_epoch and len(xs) < 30) or len(xs) == 1 else None, lw=1.2)
        ax.set(title=name, xlabel="epoch" if by_epoch else "step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    return save_figure(fig, out, dpi=90)
