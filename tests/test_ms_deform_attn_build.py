"""Building the ``ms_deform_attn`` extension: finding the CUDA toolkit behind nvcc wrappers, cache keys, the
in-checkout CPU build, ``objmtl-doctor``, and (marked ``ext_cuda``) compiling the CUDA sources without a GPU."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from objmtl.ops import build
from tests.ms_deform_attn_cases import BUILD, REPO, make_inputs, require_built

torch.set_num_threads(2)


def _script(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def _fake_toolkit(root: Path, *, dryrun: bool) -> Path:
    """``root/cuda/{bin/nvcc, include/cuda.h}``; its nvcc prints TOP under ``--dryrun`` only if ``dryrun``."""
    home = root / "cuda"
    (home / "include").mkdir(parents=True)
    (home / "include" / "cuda.h").write_text("")
    top = f'echo "#\\$ TOP={home}/bin/.." >&2' if dryrun else "true"
    _script(home / "bin" / "nvcc", f'#!/bin/sh\ncase "$*" in *--dryrun*) {top} ;; esac\nexit 0\n')
    return home


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    return monkeypatch


@pytest.mark.skipif(sys.platform == "win32", reason="shell-script wrappers")
@pytest.mark.parametrize("kind", ["wrapper-dryrun", "wrapper-exec-line", "symlink"])
def test_toolkit_is_found_behind_nvcc(tmp_path: Path, clean_env: pytest.MonkeyPatch, kind: str) -> None:
    home = _fake_toolkit(tmp_path, dryrun=kind == "wrapper-dryrun")
    bin_dir = tmp_path / "usr" / "bin"  # torch would guess tmp_path/usr: no toolkit there
    if kind == "symlink":
        bin_dir.mkdir(parents=True)
        (bin_dir / "nvcc").symlink_to(home / "bin" / "nvcc")
    else:
        _script(bin_dir / "nvcc", f'#!/bin/sh\nexec {home / "bin" / "nvcc"} "$@"\n')
    clean_env.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    toolkit = build.find_cuda_toolkit()
    assert toolkit is not None and toolkit.home.resolve() == home.resolve(), toolkit
    assert toolkit.nvcc == bin_dir / "nvcc"


def test_cuda_home_wins_and_a_missing_nvcc_means_no_toolkit(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    home = _fake_toolkit(tmp_path, dryrun=False)
    clean_env.setenv("CUDA_HOME", str(home))
    assert build.find_cuda_toolkit() == build.CudaToolkit(home, home / "bin" / "nvcc", "$CUDA_HOME")
    clean_env.setenv("CUDA_HOME", str(tmp_path / "nowhere"))
    assert build.find_cuda_toolkit() is None
    clean_env.delenv("CUDA_HOME")
    clean_env.setenv("PATH", str(tmp_path / "empty"))
    assert build.find_cuda_toolkit() is None


def test_build_key_follows_the_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    csrc = tmp_path / "csrc"
    shutil.copytree(build.CSRC, csrc)
    monkeypatch.setattr(build, "CSRC", csrc)
    monkeypatch.setenv("OBJMTL_CACHE", str(tmp_path / "cache"))
    before = build.default_build_dir(False)
    assert before.parent == tmp_path / "cache" / "torch_extensions"
    assert before.name.startswith(f"objmtl_ms_deform_attn_cpu-torch{torch.__version__}-")
    header = csrc / "ms_deform_attn.h"
    header.write_text(header.read_text() + "\n// changed\n")
    assert build.default_build_dir(False) != before
    assert build.default_build_dir(True).name.startswith("objmtl_ms_deform_attn_cuda-")


def test_cpu_build_lives_in_the_checkout() -> None:
    result = require_built("cpu")
    assert result.build_dir == BUILD / "test_ext_cpu" and result.build_dir.is_relative_to(REPO)
    assert Path(result.module.__file__).parent == result.build_dir
    assert result.module.with_cuda is False
    module, why = build.get_extension("cpu")
    assert module is result.module and why == ""
    if not torch.cuda.is_available():
        assert build.get_extension("cuda")[0] is None


def test_a_broken_source_is_reported_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = tmp_path / "broken.cpp"  # alone, so that the compiler fails at once
    broken.write_text("this is not C++;\n")
    monkeypatch.setattr(build, "extension_sources", lambda with_cuda: [broken])
    result = build.build_extension(build_dir=tmp_path / "build")
    assert result.module is None
    assert "\n" not in result.error and "broken.cpp" in result.error and "error:" in result.error


def test_doctor_reports_the_cpu_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The doctor builds into $OBJMTL_CACHE: seeded with this session's build of the same sources, ninja finds
    # it up to date. No CUDA toolkit, so that a GPU machine does not compile the CUDA kernel here.
    env = {**os.environ, "OBJMTL_CACHE": str(tmp_path), "CUDA_HOME": str(tmp_path / "no-cuda"),
           "OMP_NUM_THREADS": "2", "PYTHONWARNINGS": "ignore"}
    for key in ("OBJMTL_CACHE", "CUDA_HOME"):
        monkeypatch.setenv(key, env[key])
    shutil.copytree(require_built("cpu").build_dir, build.default_build_dir(False))
    doctor = Path(sys.executable).parent / "objmtl-doctor"
    run = subprocess.run([str(doctor)], capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode == 0, run.stderr
    lines = dict(line.split("  ", 1) for line in run.stdout.splitlines()[1:])
    assert lines["CPU kernel built"].strip().startswith("yes (")
    assert lines["CPU kernel check"].strip() == "matches the reference"
    assert lines["ms_deform_attn, cpu tensors"].strip() == "C++ kernel"
    run = subprocess.run([str(doctor)], capture_output=True, text=True, timeout=900,
                         env={**env, "OBJMTL_NO_EXT": "1"})
    assert "reference (OBJMTL_NO_EXT=1)" in run.stdout and run.returncode == 0
    no_compiler = {**env, "OBJMTL_CACHE": str(tmp_path / "empty"), "CXX": "false"}
    run = subprocess.run([str(doctor)], capture_output=True, text=True, timeout=900, env=no_compiler)
    assert run.returncode == 2 and run.stderr.startswith("error: the CPU kernel did not build: ")
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr


# --- compiling the CUDA sources (no GPU needed) -----------------------------------------------------------


def _cuobjdump(toolkit: build.CudaToolkit) -> Path | None:
    """cuobjdump next to the resolved nvcc, else on PATH, else the one Triton ships."""
    for candidate in (toolkit.home / "bin" / "cuobjdump", shutil.which("cuobjdump")):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    try:
        import triton
    except ImportError:
        return None
    bundled = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    return bundled if bundled.is_file() else None


def _elf_section(path: Path, name: str) -> bytes | None:
    """The bytes of one section of a 64-bit little-endian ELF file (the fat binary is ``.nv_fatbin``)."""
    data = path.read_bytes()
    shoff = int.from_bytes(data[0x28:0x30], "little")
    entsize, count, names = (int.from_bytes(data[o:o + 2], "little") for o in (0x3A, 0x3C, 0x3E))

    def header(i: int) -> tuple[int, int, int]:
        h = data[shoff + i * entsize: shoff + (i + 1) * entsize]
        return int.from_bytes(h[0:4], "little"), int.from_bytes(h[24:32], "little"), int.from_bytes(h[32:40], "little")

    _, strtab, _ = header(names)
    for i in range(count):
        name_at, offset, size = header(i)
        if data[strtab + name_at: data.index(b"\0", strtab + name_at)].decode() == name:
            return data[offset:offset + size]
    return None


@pytest.mark.ext_cuda
def test_cuda_sources_compile(monkeypatch: pytest.MonkeyPatch) -> None:
    toolkit = build.find_cuda_toolkit()
    if toolkit is None:
        message = "nvcc not found (set CUDA_HOME or put nvcc on PATH): the CUDA sources were not compiled"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.0")
    start = time.perf_counter()
    result = build.build_extension(with_cuda=True, build_dir=BUILD / "test_ext_cuda_sm80")
    print(f"CUDA build: {time.perf_counter() - start:.0f} s with {toolkit.home} ({toolkit.how})")
    assert result.module is not None, result.error
    assert result.module.with_cuda is True
    library = Path(result.module.__file__)
    tool = _cuobjdump(toolkit)
    if tool is not None:
        listing = subprocess.run([str(tool), "--list-elf", str(library)], capture_output=True, text=True,
                                 timeout=120)
        assert "sm_80" in listing.stdout, listing.stdout + listing.stderr
    else:  # no cuobjdump anywhere: the fat binary section must be there at least
        fatbin = _elf_section(library, ".nv_fatbin")
        assert fatbin and fatbin[:4] == bytes.fromhex("50ed55ba"), "no device code in the built library"
    inputs = make_inputs()  # the CUDA build's CPU kernel works like the CPU build's
    want = require_built("cpu").module.forward(*inputs.values(), 64)
    torch.testing.assert_close(result.module.forward(*inputs.values(), 64), want, rtol=0, atol=0)
