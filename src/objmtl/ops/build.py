"""Builds the C++ (and, where nvcc is found, CUDA) kernels of ``ms_deform_attn`` with
``torch.utils.cpp_extension.load`` (ninja), at first use, cached.

The cache lives under ``$OBJMTL_CACHE/torch_extensions`` (default ``~/.cache/objmtl/torch_extensions``), one
folder per build key: the extension's name, torch and Python versions, and a digest of the sources, the flags
and the CUDA toolkit. A changed source therefore builds into a new folder and is never hidden by an old build.

CUDA toolkit discovery: ``$CUDA_HOME`` (or ``$CUDA_PATH``) when set; otherwise the ``nvcc`` on ``PATH`` is
followed to its toolkit, since it may be a wrapper script or a symlink, where torch's own guess
(``dirname(dirname(which nvcc))``) names a folder without the CUDA libraries: first the ``TOP`` that
``nvcc --dryrun`` prints, then the symlink-resolved path, then the target of an ``exec`` line in a wrapper
script. A candidate is a toolkit when it holds ``bin/nvcc`` and ``include/cuda.h``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch

from objmtl.locations import cache_dir

__all__ = ["BuildResult", "CudaToolkit", "build_extension", "default_build_dir", "extension_sources",
           "find_cuda_toolkit", "get_extension", "use_extension"]

log = logging.getLogger(__name__)

CSRC = Path(__file__).resolve().parent / "csrc"
NAME = "objmtl_ms_deform_attn"


@dataclass(frozen=True)
class CudaToolkit:
    """A CUDA toolkit found on this machine.

    Attributes:
        home: The toolkit's root (``bin/nvcc``, ``include/cuda.h``, ``lib64``): what ``CUDA_HOME`` must be.
        nvcc: The nvcc that was found first (``$CUDA_HOME/bin/nvcc`` or the one on ``PATH``, maybe a wrapper).
        how: How ``home`` was found, for the doctor's report.
    """

    home: Path
    nvcc: Path
    how: str


@dataclass
class BuildResult:
    """The outcome of one build: the loaded module, or why there is none."""

    module: ModuleType | None
    with_cuda: bool
    seconds: float
    build_dir: Path
    error: str = ""


def _is_toolkit(path: Path) -> bool:
    return (path / "bin" / "nvcc").is_file() and (
        (path / "include" / "cuda.h").is_file() or any(path.glob("targets/*/include/cuda.h")))


def _dryrun_top(nvcc: str) -> Path | None:
    """The ``TOP`` that ``nvcc --dryrun`` reports: the real toolkit behind any wrapper."""
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "probe.cu"
        source.write_text("")
        try:
            run = subprocess.run([nvcc, "--dryrun", "-c", str(source), "-o", str(Path(tmp) / "probe.o")],
                                 capture_output=True, text=True, timeout=60, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
    match = re.search(r"^#\$ TOP=(.+)$", run.stdout + run.stderr, flags=re.MULTILINE)
    return Path(match.group(1).strip()).resolve() if match else None


def _wrapper_target(nvcc: Path) -> Path | None:
    """The program a small shell wrapper ``exec``s, when that is an absolute path to an nvcc."""
    try:
        if nvcc.stat().st_size > 64 * 1024:
            return None
        text = nvcc.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        words = shlex.split(line, comments=True) if line.strip().startswith("exec") else []
        if len(words) >= 2 and Path(words[1]).name == "nvcc" and Path(words[1]).is_absolute():
            return Path(words[1]).resolve()
    return None


def find_cuda_toolkit() -> CudaToolkit | None:
    """The CUDA toolkit to build with, or None where there is none (see the module's docstring)."""
    env = os.environ
    return _find_cuda_toolkit(env.get("CUDA_HOME"), env.get("CUDA_PATH"), env.get("PATH", ""))


@functools.lru_cache(maxsize=8)
def _find_cuda_toolkit(cuda_home: str | None, cuda_path: str | None, path: str) -> CudaToolkit | None:
    for var, home in (("CUDA_HOME", cuda_home), ("CUDA_PATH", cuda_path)):
        if home:
            nvcc = Path(home) / "bin" / "nvcc"
            return CudaToolkit(Path(home), nvcc, f"${var}") if nvcc.is_file() else None
    found = shutil.which("nvcc", path=path)
    if found is None:
        return None
    nvcc = Path(found)
    top = _dryrun_top(found)
    if top is not None and _is_toolkit(top):
        return CudaToolkit(top, nvcc, "nvcc --dryrun (TOP)")
    resolved = nvcc.resolve()
    if _is_toolkit(resolved.parent.parent):
        return CudaToolkit(resolved.parent.parent, nvcc, "nvcc's resolved path")
    target = _wrapper_target(nvcc)
    if target is not None and _is_toolkit(target.parent.parent):
        return CudaToolkit(target.parent.parent, nvcc, "the exec line of the nvcc wrapper")
    return None


def extension_sources(with_cuda: bool) -> list[Path]:
    """The C++ sources (and the CUDA one with ``with_cuda``) to compile."""
    sources = [CSRC / "ms_deform_attn_bindings.cpp", CSRC / "cpu" / "ms_deform_attn_cpu.cpp"]
    return sources + [CSRC / "cuda" / "ms_deform_attn_cuda.cu"] if with_cuda else sources


def _flags(with_cuda: bool) -> dict[str, list[str]]:
    cflags = ["-O3"]
    ldflags: list[str] = []
    if sys.platform.startswith("linux"):  # at::parallel_for runs on torch's OpenMP pool (same libgomp soname)
        cflags.append("-fopenmp")
        ldflags.append("-fopenmp")
    cuda_cflags = ["-O3"]
    if with_cuda:
        cflags.append("-DOBJMTL_WITH_CUDA")
        cuda_cflags.append("-DOBJMTL_WITH_CUDA")
    return {"extra_cflags": cflags, "extra_cuda_cflags": cuda_cflags, "extra_ldflags": ldflags}


def _build_key(with_cuda: bool, toolkit: CudaToolkit | None) -> str:
    digest = hashlib.sha256()
    for path in sorted(CSRC.rglob("*")):
        if path.is_file() and path.suffix in {".cpp", ".cu", ".h", ".cuh"}:
            digest.update(path.relative_to(CSRC).as_posix().encode())
            digest.update(path.read_bytes())
    digest.update(repr(sorted(_flags(with_cuda).items())).encode())
    if with_cuda:  # the architectures compiled: TORCH_CUDA_ARCH_LIST, else the visible GPUs'
        archs = os.environ.get("TORCH_CUDA_ARCH_LIST") or ",".join(
            f"{major}.{minor}" for major, minor in (torch.cuda.get_device_capability(i)
                                                    for i in range(torch.cuda.device_count())))
        digest.update(f"{toolkit.home if toolkit else ''}|{archs}".encode())
    variant = "cuda" if with_cuda else "cpu"
    python = f"py{sys.version_info.major}{sys.version_info.minor}"
    return f"{NAME}_{variant}-torch{torch.__version__}-{python}-{digest.hexdigest()[:12]}"


def default_build_dir(with_cuda: bool) -> Path:
    """``$OBJMTL_CACHE/torch_extensions/<key>`` (default root ``~/.cache/objmtl``)."""
    return cache_dir() / "torch_extensions" / _build_key(with_cuda, find_cuda_toolkit() if with_cuda else None)


def _ensure_ninja_on_path() -> None:
    """Torch runs ``ninja`` from PATH; a venv that was not activated has it only beside its python."""
    if shutil.which("ninja"):
        return
    candidates = [Path(sysconfig.get_path("scripts")), Path(sys.executable).parent]
    with contextlib.suppress(ImportError, AttributeError):  # the ``ninja`` package's own binary
        candidates.insert(0, Path(importlib.import_module("ninja").BIN_DIR))
    for folder in candidates:
        if (folder / "ninja").is_file():
            os.environ["PATH"] = f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"
            return


def _cpp_extension() -> ModuleType:
    """``torch.utils.cpp_extension``, without its import-time guess of CUDA_HOME being logged as a warning."""
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return importlib.import_module("torch.utils.cpp_extension")
    finally:
        logger.setLevel(level)


def build_extension(*, with_cuda: bool = False, build_dir: Path | None = None, verbose: bool = False) -> BuildResult:
    """Compile (ninja only redoes what changed) and import the kernels.

    Args:
        with_cuda: Also compile the CUDA kernel (needs a toolkit: ``find_cuda_toolkit``). ``TORCH_CUDA_ARCH_LIST``
            picks the architectures (torch's default: the visible GPUs', or all it supports where none).
        build_dir: Where to build; default ``default_build_dir(with_cuda)``.
        verbose: Show the compiler's commands and output.

    Returns:
        The module (``forward``, ``backward``, ``with_cuda``), or ``module=None`` and ``error``: one line.
    """
    start = time.perf_counter()
    toolkit = find_cuda_toolkit() if with_cuda else None
    build_dir = Path(build_dir) if build_dir is not None else default_build_dir(with_cuda)
    if with_cuda and toolkit is None:
        return BuildResult(None, True, 0.0, build_dir, "nvcc not found (set CUDA_HOME or put nvcc on PATH)")
    build_dir.mkdir(parents=True, exist_ok=True)
    _ensure_ninja_on_path()
    cpp_extension = _cpp_extension()
    if toolkit is not None:
        os.environ["CUDA_HOME"] = str(toolkit.home)
        cpp_extension.CUDA_HOME = str(toolkit.home)
    name = f"{NAME}_{'cuda' if with_cuda else 'cpu'}"
    try:
        module = cpp_extension.load(name=name, sources=[str(s) for s in extension_sources(with_cuda)],
                                    build_directory=str(build_dir), with_cuda=with_cuda, verbose=verbose,
                                    **_flags(with_cuda))
    except Exception as e:  # compiler errors come as RuntimeError/OSError/ImportError with pages of output
        return BuildResult(None, with_cuda, time.perf_counter() - start, build_dir, _first_error_line(e))
    return BuildResult(module, with_cuda, time.perf_counter() - start, build_dir)


def _first_error_line(error: BaseException) -> str:
    """The most telling line of a build failure (the compiler's first ``error:``, else the exception's first line)."""
    text = str(error)
    for line in text.splitlines():
        if "error:" in line.lower():
            return f"{type(error).__name__}: {line.strip()}"
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(error).__name__}: {first}"


_lock = threading.Lock()
_cached: dict[str, BuildResult] = {}


def get_extension(device_type: str) -> tuple[ModuleType | None, str]:
    """The kernels for tensors on ``device_type`` ("cpu" or "cuda"), built once per process.

    Returns:
        ``(module, "")``, or ``(None, why not)``: one line naming the reason.
    """
    with _lock:
        if "default" not in _cached:
            want_cuda = torch.cuda.is_available() and find_cuda_toolkit() is not None
            result = build_extension(with_cuda=want_cuda)
            if result.module is None and want_cuda:  # the CPU kernel may still build without nvcc's part
                cuda_error = result.error
                result = build_extension(with_cuda=False)
                _cached["cuda_error"] = BuildResult(None, True, 0.0, result.build_dir, cuda_error)
            _cached["default"] = result
        result = _cached["default"]
    if result.module is None:
        return None, f"the extension did not build ({result.error})"
    if device_type == "cuda" and not result.module.with_cuda:
        if "cuda_error" in _cached:
            return None, f"the CUDA kernel did not build ({_cached['cuda_error'].error})"
        return None, "no CUDA kernel was built (nvcc not found: set CUDA_HOME or put nvcc on PATH)"
    if device_type not in ("cpu", "cuda"):
        return None, f"no kernel for device {device_type!r}"
    return result.module, ""


def use_extension(result: BuildResult) -> None:
    """Make ``ms_deform_attn`` use this build from now on (tests build into the checkout; the doctor ahead of time)."""
    with _lock:
        _cached.clear()
        _cached["default"] = result
