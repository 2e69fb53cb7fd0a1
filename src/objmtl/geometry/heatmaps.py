"""Keypoint heatmaps: Gaussian targets, sub-pixel decoding and the flip test's mirror.

Targets are unnormalised Gaussians (peak 1) centred at the keypoint's exact sub-pixel location
(not rounded to a cell), so a decoder that reads the peak to sub-pixel precision recovers it.
Decoding takes the arg-max cell and refines it either by DARK's second-order Taylor step (Zhang
et al., CVPR 2020: the log of a Gaussian is quadratic, so one Newton step on the log of the
smoothed heatmap lands on its centre) or by SimpleBaseline's quarter-cell step towards the larger
neighbour.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["decode_heatmaps", "flip_heatmaps", "gaussian_targets"]


def gaussian_targets(points: np.ndarray, visible: np.ndarray, *, size: tuple[int, int],
                     sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian heatmaps of keypoints and their loss weights.

    Args:
        points: (P, K, 2) x, y in heatmap cells.
        visible: (P, K) truthy where the keypoint is labelled (COCO v > 0).
        size: (h, w) of the heatmap.
        sigma: the Gaussian's standard deviation in cells.

    Returns:
        ``heatmaps`` (P, K, h, w) float32 and ``weights`` (P, K) float32: 1 for a labelled keypoint
        whose centre lies on the heatmap (within half a cell of its border), else 0 (and an empty map).
    """
    h, w = size
    points = np.asarray(points, np.float64)
    x, y = points[..., 0], points[..., 1]
    inside = (x >= -0.5) & (x <= w - 0.5) & (y >= -0.5) & (y <= h - 0.5) & np.isfinite(x) & np.isfinite(y)
    weights = (np.asarray(visible, bool) & inside).astype(np.float32)
    xs, ys = np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64)
    gx = np.exp(-((xs - np.nan_to_num(x)[..., None]) ** 2) / (2 * sigma**2))  # (P, K, w)
    gy = np.exp(-((ys - np.nan_to_num(y)[..., None]) ** 2) / (2 * sigma**2))  # (P, K, h)
    heatmaps = (gy[..., :, None] * gx[..., None, :]).astype(np.float32)  # (P, K, h, w)
    heatmaps *= weights[..., None, None]
    return heatmaps, weights


def flip_heatmaps(heatmaps: Tensor, flip_pairs: Sequence[Sequence[int]]) -> Tensor:
    """Heatmaps of a mirrored crop, mirrored back: width reversed, left/right channels swapped."""
    out = heatmaps.flip(-1)
    if flip_pairs:
        order = list(range(heatmaps.shape[1]))
        for a, b in flip_pairs:
            order[a], order[b] = order[b], order[a]
        out = out[:, order]
    return out


def _gaussian_blur(heatmaps: Tensor, kernel: int) -> Tensor:
    """Separable Gaussian blur (OpenCV's sigma for the kernel size), edges replicated, peaks kept."""
    sigma = 0.3 * ((kernel - 1) * 0.5 - 1) + 0.8
    r = kernel // 2
    t = torch.arange(kernel, dtype=heatmaps.dtype, device=heatmaps.device) - r
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = g / g.sum()
    p, k, h, w = heatmaps.shape
    x = heatmaps.reshape(p * k, 1, h, w)
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), g.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), g.view(1, 1, -1, 1))
    x = x.reshape(p, k, h, w)
    # DARK rescales the blurred map to the original peak, so confidences keep their meaning
    peak = heatmaps.amax(dim=(-2, -1), keepdim=True)
    return x * peak / x.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-12)


def _taylor(log_hm: Tensor, ix: Tensor, iy: Tensor) -> Tensor:
    """DARK's Newton step ``-H^-1 g`` on the log-heatmap at integer cells (P, K); 0 at borders."""
    p, k, h, w = log_hm.shape
    flat = log_hm.reshape(p, k, h * w)
    inner = (ix >= 1) & (ix <= w - 2) & (iy >= 1) & (iy <= h - 2)
    cx, cy = ix.clamp(1, max(w - 2, 1)), iy.clamp(1, max(h - 2, 1))

    def at(dx: int, dy: int) -> Tensor:
        idx = ((cy + dy).clamp(0, h - 1) * w + (cx + dx).clamp(0, w - 1)).unsqueeze(-1)
        return flat.gather(-1, idx).squeeze(-1)

    c = at(0, 0)
    gx, gy = 0.5 * (at(1, 0) - at(-1, 0)), 0.5 * (at(0, 1) - at(0, -1))
    hxx, hyy = at(1, 0) - 2 * c + at(-1, 0), at(0, 1) - 2 * c + at(0, -1)
    hxy = 0.25 * (at(1, 1) - at(-1, 1) - at(1, -1) + at(-1, -1))
    det = hxx * hyy - hxy**2
    ok = inner & (det > 1e-12) & (hxx < 0)  # a maximum: negative definite Hessian
    safe = torch.where(ok, det, torch.ones_like(det))
    ox = -(hyy * gx - hxy * gy) / safe
    oy = -(-hxy * gx + hxx * gy) / safe
    offset = torch.stack([ox, oy], dim=-1).clamp(-1, 1)
    return torch.where(ok.unsqueeze(-1), offset, torch.zeros_like(offset))


def decode_heatmaps(heatmaps: Tensor, *, method: str = "dark", blur_kernel: int = 11) -> tuple[Tensor, Tensor]:
    """Keypoint locations and confidences from heatmaps.

    Args:
        heatmaps: (P, K, h, w).
        method: ``dark`` (Taylor step on the log of the blurred heatmap), ``quarter`` (a quarter cell
            towards the larger neighbour) or ``argmax``.
        blur_kernel: DARK's smoothing kernel (odd; 11 for sigma-2 targets, as in the paper).

    Returns:
        ``coords`` (P, K, 2) x, y in heatmap cells (float32) and ``maxvals`` (P, K): the peak values.
    """
    if method not in ("dark", "quarter", "argmax"):
        raise ValueError(f"decode method {method!r}: use dark, quarter or argmax")
    p, k, h, w = heatmaps.shape
    hm = heatmaps.detach().float()
    if p == 0 or k == 0:
        return hm.new_zeros((p, k, 2)), hm.new_zeros((p, k))
    maxvals, idx = hm.reshape(p, k, -1).max(dim=-1)
    ix, iy = idx % w, torch.div(idx, w, rounding_mode="floor")
    coords = torch.stack([ix, iy], dim=-1).float()
    if method == "quarter":
        flat = hm.reshape(p, k, -1)

        def at(x: Tensor, y: Tensor) -> Tensor:
            return flat.gather(-1, (y.clamp(0, h - 1) * w + x.clamp(0, w - 1)).unsqueeze(-1)).squeeze(-1)

        dx = torch.where((ix > 0) & (ix < w - 1), at(ix + 1, iy) - at(ix - 1, iy), torch.zeros_like(maxvals))
        dy = torch.where((iy > 0) & (iy < h - 1), at(ix, iy + 1) - at(ix, iy - 1), torch.zeros_like(maxvals))
        coords = coords + 0.25 * torch.stack([dx.sign(), dy.sign()], dim=-1)
    elif method == "dark":
        blurred = _gaussian_blur(hm, blur_kernel) if blur_kernel > 1 else hm
        coords = coords + _taylor(torch.log(blurred.clamp_min(1e-10)), ix, iy)
    if not math.isfinite(float(coords.sum())):
        coords = torch.nan_to_num(coords)
    return coords, maxvals
