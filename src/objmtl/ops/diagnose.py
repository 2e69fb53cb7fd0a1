"""What ``objmtl-doctor`` checks: builds the kernels of ``ms_deform_attn`` ahead of time (into the cache the op
uses at run time), runs them once against the reference, and says which path the op takes on each device."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from types import ModuleType

import torch

from objmtl.ops import build

__all__ = ["Diagnosis", "diagnose"]


@dataclass
class Diagnosis:
    """Rows of the report (label, value) and whether the CPU path works."""

    rows: list[tuple[str, str]] = field(default_factory=list)
    cpu_ok: bool = False
    cpu_error: str = ""


def _describe(result: build.BuildResult | None) -> str:
    if result is None:
        return "not built"
    if result.module is None:
        return f"no: {result.error}"
    return f"yes ({result.seconds:.1f} s, {result.build_dir})"


def _check_against_reference(module: ModuleType, device: str) -> str:
    """Runs the kernel on a small random input on ``device``; '' when it matches the reference, else why not."""
    from objmtl.ops.ms_deform_attn_reference import ms_deform_attn_reference

    g = torch.Generator().manual_seed(0)
    shapes = torch.tensor([[6, 5], [3, 3]])
    starts = torch.tensor([0, 30])
    value = torch.randn(2, 39, 2, 4, generator=g)
    locations = torch.rand(2, 7, 2, 2, 3, 2, generator=g) * 1.2 - 0.1
    weights = torch.rand(2, 7, 2, 2, 3, generator=g)
    value, shapes, starts, locations, weights = (t.to(device) for t in (value, shapes, starts, locations, weights))
    try:
        out = module.forward(value, shapes, starts, locations, weights, 64)
    except Exception as e:  # report any failure as one line
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    diff = float((out - ms_deform_attn_reference(value, shapes, locations, weights)).abs().max())
    return "" if diff < 1e-4 else f"differs from the reference by {diff:.2g}"


def _path(device: str, available: bool) -> str:
    from objmtl.ops.ms_deform_attn import use_reference

    if not available:
        return "n/a (no GPU)" if device == "cuda" else "n/a"
    if use_reference():
        return "reference (OBJMTL_NO_EXT=1)"
    module, why = build.get_extension(device)
    if module is None:
        return f"reference ({why})"
    return "CUDA kernel" if device == "cuda" else "C++ kernel"


def diagnose(*, compile_cuda: bool = False, verbose: bool = False) -> Diagnosis:
    """Build what the op will use here (and the CUDA kernel with ``compile_cuda``), check it, report.

    Args:
        compile_cuda: Also compile the CUDA kernel where no GPU is visible (it cannot run here).
        verbose: Show the compiler's output.
    """
    report = Diagnosis()
    rows = report.rows
    gpu = torch.cuda.is_available()
    rows.append(("torch", f"{torch.__version__} (CUDA {torch.version.cuda or 'none'})"))
    toolkit = build.find_cuda_toolkit()
    which = shutil.which("nvcc")
    if toolkit is not None:
        rows.append(("nvcc", f"{toolkit.nvcc} -> toolkit {toolkit.home} (found by {toolkit.how})"))
    else:
        rows.append(("nvcc", f"{which}, but no toolkit behind it" if which else "not found (set CUDA_HOME)"))
    if gpu:
        name = torch.cuda.get_device_name(0)
        major, minor = torch.cuda.get_device_capability(0)
        rows.append(("GPU", f"{name} (compute capability {major}.{minor}), {torch.cuda.device_count()} visible"))
    else:
        rows.append(("GPU", "none visible"))

    want_cuda = gpu and toolkit is not None
    cuda_result = build.build_extension(with_cuda=True, verbose=verbose) if want_cuda or compile_cuda else None
    if want_cuda and cuda_result is not None and cuda_result.module is not None:
        runtime = cuda_result  # what get_extension would build: CPU and CUDA kernels in one module
    else:
        runtime = build.build_extension(with_cuda=False, verbose=verbose)
    rows.append(("CPU kernel built", _describe(runtime)))
    if cuda_result is not None:
        rows.append(("CUDA kernel built", _describe(cuda_result)))
    elif toolkit is None:
        rows.append(("CUDA kernel built", "no: nvcc not found"))
    else:
        rows.append(("CUDA kernel built", "no: no GPU here, not needed (--cuda compiles it anyway)"))
    build.use_extension(runtime)
    if runtime.module is None:
        report.cpu_error = f"the CPU kernel did not build: {runtime.error}"
    else:
        report.cpu_error = _check_against_reference(runtime.module, "cpu")
        report.cpu_ok = not report.cpu_error
        rows.append(("CPU kernel check", "matches the reference" if report.cpu_ok else report.cpu_error))
        if gpu and runtime.module.with_cuda:
            problem = _check_against_reference(runtime.module, "cuda")
            rows.append(("CUDA kernel check", problem or "matches the reference"))
    rows.append(("ms_deform_attn, cpu tensors", _path("cpu", True)))
    rows.append(("ms_deform_attn, cuda tensors", _path("cuda", gpu)))
    return report
