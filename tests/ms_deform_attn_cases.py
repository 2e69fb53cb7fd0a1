"""Inputs and builds shared by the ``ms_deform_attn`` tests.

The kernels are built into folders inside the checkout (``build/test_ext*``, git-ignored), never taken from
the user's cache, so a cached build can never hide a broken one; ninja rebuilds what changed.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from torch import Tensor

from objmtl.ops import build

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "build"


@functools.cache
def built(variant: str) -> build.BuildResult:
    """One build per test session: ``cpu`` (the C++ kernel alone) or ``cuda`` (both kernels)."""
    return build.build_extension(with_cuda=variant == "cuda", build_dir=BUILD / f"test_ext_{variant}")


def require_built(variant: str) -> build.BuildResult:
    """The build, made the one ``ms_deform_attn`` uses; a build that fails fails the test."""
    result = built(variant)
    if result.module is None:
        pytest.fail(f"the {variant} extension did not build: {result.error}")
    build.use_extension(result)
    return result


def make_inputs(*, n: int = 2, heads: int = 3, channels: int = 5, shapes: tuple[tuple[int, int], ...] = ((6, 4), (3, 2)),
                queries: int = 7, points: int = 2, dtype: torch.dtype = torch.float64, low: float = -0.1,
                high: float = 1.1, seed: int = 0, device: str = "cpu") -> dict[str, Tensor]:
    """Random op inputs; locations uniform in [low, high] (beyond [0, 1] some fall off the maps).

    Returns:
        ``value`` [N, S, M, D], ``spatial_shapes`` [L, 2], ``level_start_index`` [L],
        ``sampling_locations`` [N, Lq, M, L, P, 2], ``attention_weights`` [N, Lq, M, L, P].
    """
    g = torch.Generator().manual_seed(seed)
    spatial_shapes = torch.tensor(shapes, dtype=torch.long)
    areas = spatial_shapes[:, 0] * spatial_shapes[:, 1]
    level_start_index = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    levels = len(shapes)
    value = torch.randn(n, int(areas.sum()), heads, channels, generator=g, dtype=torch.float64)
    locations = torch.rand(n, queries, heads, levels, points, 2, generator=g, dtype=torch.float64)
    weights = torch.rand(n, queries, heads, levels, points, generator=g, dtype=torch.float64)
    out = {"value": value, "spatial_shapes": spatial_shapes, "level_start_index": level_start_index,
           "sampling_locations": locations * (high - low) + low, "attention_weights": weights}
    return {k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype) for k, v in out.items()}


def assert_close_relative(actual: Tensor, expected: Tensor, tol: float, what: str = "") -> None:
    """max |actual - expected| <= tol * max |expected| (NaN-free inputs)."""
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    err = float((actual.double() - expected.double()).abs().max()) if expected.numel() else 0.0
    assert err <= tol * max(scale, 1e-30), f"{what}: max error {err:.3g} > {tol:g} x max |expected| {scale:.3g}"
