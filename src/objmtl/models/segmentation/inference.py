"""Whole-image and sliding-window inference: logits for a batch at its input size."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["slide_inference", "window_starts"]


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows of ``window`` px every ``stride`` px covering ``length``; the last ends
    at ``length`` (mmseg's layout). A side shorter than the window is one window of that side."""
    if length <= window:
        return [0]
    n = (length - window + stride - 1) // stride + 1
    return sorted({min(i * stride, length - window) for i in range(n)})


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


@torch.no_grad()
def slide_inference(logits_fn: Callable[[Tensor], Tensor], images: Tensor, *, window: int | Sequence[int],
                    stride: int | Sequence[int] | None = None) -> Tensor:
    """Logits of ``images`` from overlapping windows, averaged where they overlap.

    Args:
        logits_fn: images Tensor[N, 3, h, w] -> logits Tensor[N, K, h, w] (at the window's size).
        images: Tensor[N, 3, H, W].
        window: window (h, w) in input pixels, or one side for both.
        stride: step between windows; default two thirds of the window.

    Returns:
        Tensor[N, K, H, W]: the mean of the windows' logits at each pixel.
    """
    wh, ww = _pair(window)
    sh, sw = _pair(stride) if stride is not None else (max(1, wh * 2 // 3), max(1, ww * 2 // 3))
    if min(wh, ww, sh, sw) < 1:
        raise ValueError(f"window {window} and stride {stride} must be positive")
    n, _, h, w = images.shape
    total: Tensor | None = None
    count = images.new_zeros((1, 1, h, w))
    for y in window_starts(h, wh, sh):
        for x in window_starts(w, ww, sw):
            crop = images[:, :, y:y + wh, x:x + ww]
            logits = logits_fn(crop)  # [N, K, <=wh, <=ww]
            if total is None:
                total = images.new_zeros((n, logits.shape[1], h, w))
            total[:, :, y:y + crop.shape[-2], x:x + crop.shape[-1]] += logits
            count[:, :, y:y + crop.shape[-2], x:x + crop.shape[-1]] += 1
    assert total is not None
    return total / count
