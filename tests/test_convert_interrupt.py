"""Ctrl-C during a conversion leaves neither the output nor a partial folder behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image


def test_sigint_mid_conversion_leaves_nothing(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for cls in ("a", "b"):
        (src / cls).mkdir(parents=True)
        for i in range(1500):
            Image.fromarray(np.full((16, 16, 3), i % 255, np.uint8)).save(src / cls / f"{i}.png")
    out = tmp_path / "out"
    exe = Path(sys.executable).parent / "objmtl-data"
    proc = subprocess.Popen([str(exe), "convert", "--format", "imagefolder", "--src", str(src), "--out", str(out),
                             "--max-count", "100"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True,
                            # a parent that ignores SIGINT (a background job, or a library earlier in this
                            # pytest process) would pass that on: give the child Ctrl-C's default action
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list(tmp_path.glob(".out.partial-*/train/*.tar")):
            time.sleep(0.02)  # until the first shard of the partial output is being written
        assert proc.poll() is None, proc.communicate()
        os.killpg(proc.pid, signal.SIGINT)  # as Ctrl-C in a terminal: the whole process group
        _, err = proc.communicate(timeout=60)
    finally:  # never leave a hung conversion behind
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0
    assert "Traceback" not in err.decode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
