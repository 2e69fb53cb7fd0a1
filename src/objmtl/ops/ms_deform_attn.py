"""``ms_deform_attn``: the public op, upstream Deformable DETR's signature.

Which implementation runs:

- the CUDA kernel on CUDA tensors and the C++ kernel on CPU tensors (``objmtl.ops.build``: compiled at first
  use, cached), through one autograd Function;
- the pure-PyTorch reference (``ms_deform_attn_reference``) when ``OBJMTL_NO_EXT=1``, while exporting to ONNX
  or tracing (``GridSample`` maps to ONNX; a compiled kernel does not), and when the kernel for the device is
  unavailable (one warning, naming why).

Under autocast (or with float16 / bfloat16 inputs on a device whose kernel lacks them) the op computes in
float32 and casts the result back to ``value``'s dtype.
"""

from __future__ import annotations

import os
import threading
import warnings
from contextlib import nullcontext
from types import ModuleType

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from objmtl.ops.ms_deform_attn_reference import ms_deform_attn_reference

__all__ = ["ms_deform_attn"]

# dtypes each kernel computes in natively; others go through float32
_KERNEL_DTYPES = {"cpu": (torch.float32, torch.float64), "cuda": (torch.float32, torch.float64, torch.float16)}

_warned: set[str] = set()
_warn_lock = threading.Lock()


class _MSDeformAttnFunction(torch.autograd.Function):
    """Forward and backward through the compiled kernels; the module picks CPU or CUDA by the tensors' device."""

    @staticmethod
    def forward(ctx: FunctionCtx, ext: ModuleType, value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                sampling_locations: Tensor, attention_weights: Tensor, im2col_step: int) -> Tensor:
        ctx.ext, ctx.im2col_step = ext, im2col_step
        ctx.save_for_backward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
        return ext.forward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                           im2col_step)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights = ctx.saved_tensors
        grad_value, grad_locations, grad_weights = ctx.ext.backward(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights, grad_output,
            ctx.im2col_step)
        return None, grad_value, None, None, grad_locations, grad_weights, None


def _check(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor, sampling_locations: Tensor,
           attention_weights: Tensor, im2col_step: int) -> None:
    """Clear errors for wrong ranks, sizes and dtypes (ValueError / TypeError), before any kernel sees them."""
    for name, t, rank, layout in (("value", value, 4, "[N, S, M, D]"),
                                  ("spatial_shapes", spatial_shapes, 2, "[L, 2]"),
                                  ("level_start_index", level_start_index, 1, "[L]"),
                                  ("sampling_locations", sampling_locations, 6, "[N, Lq, M, L, P, 2]"),
                                  ("attention_weights", attention_weights, 5, "[N, Lq, M, L, P]")):
        if not isinstance(t, Tensor):
            raise TypeError(f"ms_deform_attn: {name} must be a Tensor, got {type(t).__name__}")
        if t.dim() != rank:
            raise ValueError(f"ms_deform_attn: {name} must be {layout}, got shape {tuple(t.shape)}")
    for name, t in (("value", value), ("sampling_locations", sampling_locations),
                    ("attention_weights", attention_weights)):
        if not t.is_floating_point():
            raise TypeError(f"ms_deform_attn: {name} must be floating point, got {t.dtype}")
    for name, t in (("spatial_shapes", spatial_shapes), ("level_start_index", level_start_index)):
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"ms_deform_attn: {name} must be an integer tensor (long), got {t.dtype}")
    n, s, m, _ = value.shape
    levels = spatial_shapes.shape[0]
    if spatial_shapes.shape[1] != 2 or level_start_index.shape[0] != levels:
        raise ValueError(f"ms_deform_attn: spatial_shapes must be [L, 2] and level_start_index [L], got "
                         f"{tuple(spatial_shapes.shape)} and {tuple(level_start_index.shape)}")
    want = (n, sampling_locations.shape[1], m, levels, sampling_locations.shape[4], 2)
    if tuple(sampling_locations.shape) != want:
        raise ValueError(f"ms_deform_attn: sampling_locations must be [N, Lq, M, L, P, 2] = {want} for value "
                         f"{tuple(value.shape)} and L = {levels}, got {tuple(sampling_locations.shape)}")
    if tuple(attention_weights.shape) != want[:5]:
        raise ValueError(f"ms_deform_attn: attention_weights must be [N, Lq, M, L, P] = {want[:5]}, got "
                         f"{tuple(attention_weights.shape)}")
    if not isinstance(im2col_step, int) or im2col_step < 1:
        raise ValueError(f"ms_deform_attn: im2col_step must be a positive int, got {im2col_step!r}")
    sizes = spatial_shapes.tolist()
    total = sum(h * w for h, w in sizes)
    if total != s:
        raise ValueError(f"ms_deform_attn: spatial_shapes {sizes} give sum(H * W) = {total}, but value has "
                         f"S = {s} positions")
    starts = [0]
    for h, w in sizes[:-1]:
        starts.append(starts[-1] + h * w)
    if level_start_index.tolist() != starts:
        raise ValueError(f"ms_deform_attn: level_start_index {level_start_index.tolist()} does not match "
                         f"spatial_shapes {sizes} (expected {starts})")


def _warn_once(key: str, message: str) -> None:
    with _warn_lock:
        if key in _warned:
            return
        _warned.add(key)
    warnings.warn(message, RuntimeWarning, stacklevel=4)  # the caller of ms_deform_attn


def _kernel(device_type: str) -> ModuleType | None:
    """The compiled kernels for this device, or None (after one warning) where they are unavailable."""
    from objmtl.ops.build import get_extension

    ext, why = get_extension(device_type)
    if ext is None:
        _warn_once(device_type, f"ms_deform_attn on {device_type}: using the pure-PyTorch reference (slower) "
                                f"because {why}")
    return ext


def use_reference() -> bool:
    """True while the op must not call a compiled kernel: ``OBJMTL_NO_EXT=1``, ONNX export or tracing."""
    return (os.environ.get("OBJMTL_NO_EXT", "") == "1" or torch.onnx.is_in_onnx_export()
            or torch.jit.is_tracing())


def ms_deform_attn(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor, sampling_locations: Tensor,
                   attention_weights: Tensor, im2col_step: int = 64) -> Tensor:
    """Multi-scale deformable attention: attention-weighted bilinear samples of each head's values.

    Args:
        value: [N, S, M, D]; S = sum of H_l * W_l, levels concatenated row-major.
        spatial_shapes: [L, 2] long, (H_l, W_l).
        level_start_index: [L] long, start of each level in S (the exclusive cumulative sum of H_l * W_l).
        sampling_locations: [N, Lq, M, L, P, 2], (x, y) in [0, 1] of each level's map; locations outside
            contribute zero (bilinear with zero padding, ``align_corners=False``).
        attention_weights: [N, Lq, M, L, P].
        im2col_step: Batch chunk of the compiled kernels; no effect on the result.

    Returns:
        [N, Lq, M * D], in ``value``'s dtype.

    Raises:
        ValueError: Wrong ranks or sizes, or ``spatial_shapes`` that do not add up to S.
        TypeError: Non-floating inputs or integer tables that are not integers.
    """
    if torch.onnx.is_in_onnx_export() or torch.jit.is_tracing():
        return ms_deform_attn_reference(value, spatial_shapes, sampling_locations, attention_weights)
    _check(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, im2col_step)
    device_type = value.device.type
    out_dtype = value.dtype
    dtypes = {value.dtype, sampling_locations.dtype, attention_weights.dtype}
    autocast = torch.is_autocast_enabled(device_type)
    if not autocast and len(dtypes) > 1:
        raise TypeError(f"ms_deform_attn: value, sampling_locations and attention_weights must share one dtype, got "
                        f"{value.dtype}, {sampling_locations.dtype} and {attention_weights.dtype}")
    compute = out_dtype if not autocast and out_dtype in _KERNEL_DTYPES.get(device_type, ()) else torch.float32
    inputs = [t.to(compute) for t in (value, sampling_locations, attention_weights)]
    with torch.autocast(device_type, enabled=False) if autocast else nullcontext():
        ext = None if os.environ.get("OBJMTL_NO_EXT", "") == "1" else _kernel(device_type)
        if ext is None:
            out = ms_deform_attn_reference(inputs[0], spatial_shapes, inputs[1], inputs[2])
        else:
            out = _MSDeformAttnFunction.apply(ext, inputs[0], spatial_shapes, level_start_index, inputs[1],
                                              inputs[2], im2col_step)
    return out.to(out_dtype)
