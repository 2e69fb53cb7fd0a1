"""Pictures of an image regression's evaluation: predicted against true, and the residuals."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from objmtl.viz.plots import save_figure

__all__ = ["plot_regression"]


def plot_regression(pred: np.ndarray, true: np.ndarray, names: Sequence[str], out_dir: str | Path, *,
                    stage: str) -> list[Path]:
    """Writes ``out_dir/scatter_<stage>.png`` (predicted against true, one panel per target, with the
    identity line) and ``out_dir/residuals_<stage>.png`` (a histogram of predicted - true per target).

    ``pred`` and ``true`` are ``[N, T]`` in the source's units. Returns the two paths.
    """
    pred, true = np.asarray(pred, dtype=np.float64).reshape(len(pred), -1), np.asarray(true, np.float64)
    true = true.reshape(len(true), -1)
    t = len(names)
    size = (3.6 * t, 3.4)
    scatter, hist = Figure(figsize=size), Figure(figsize=size)
    for j, name in enumerate(names):
        ax = scatter.add_subplot(1, t, j + 1)
        lo, hi = _limits(np.concatenate([true[:, j], pred[:, j]]))
        ax.plot([lo, hi], [lo, hi], color="0.6", linewidth=1, zorder=1)
        ax.scatter(true[:, j], pred[:, j], s=8, alpha=0.6, zorder=2)
        ax.set(title=f"{name}: R² {_r2(pred[:, j], true[:, j]):.3f}", xlabel="true", ylabel="predicted",
               xlim=(lo, hi), ylim=(lo, hi))
        residual = pred[:, j] - true[:, j]
        bx = hist.add_subplot(1, t, j + 1)
        bx.hist(residual, bins=min(30, max(5, len(residual) // 4)), color="tab:orange")
        bx.axvline(0.0, color="0.3", linewidth=1)
        mean = float(residual.mean()) if len(residual) else 0.0
        bx.set(title=f"{name}: mean {mean:+.3g}", xlabel="predicted - true", ylabel="images")
    scatter.suptitle(f"{stage}: predicted vs true ({len(true)} images)")
    hist.suptitle(f"{stage}: residuals")
    out_dir = Path(out_dir)
    return [save_figure(scatter, out_dir / f"scatter_{stage}.png"),
            save_figure(hist, out_dir / f"residuals_{stage}.png")]


def _limits(values: np.ndarray) -> tuple[float, float]:
    """The shared axis range of one panel: the values' range and 5 % on each side (a unit range if none)."""
    if not len(values):
        return 0.0, 1.0
    lo, hi = float(values.min()), float(values.max())
    pad = 0.05 * (hi - lo) if hi > lo else 0.5
    return lo - pad, hi + pad


def _r2(pred: np.ndarray, true: np.ndarray) -> float:
    """The coefficient of determination, ``1 - SS_res / SS_tot`` (nan for fewer than two distinct values)."""
    total = float(((true - true.mean()) ** 2).sum()) if len(true) else 0.0
    return 1.0 - float(((true - pred) ** 2).sum()) / total if total > 0 else float("nan")
