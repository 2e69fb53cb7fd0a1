"""Checkpoint writes are atomic: a kill during a write leaves the previous checkpoint loadable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from objmtl.runs.atomic_checkpoint_io import AtomicCheckpointIO, atomic_torch_save
from tests.helpers import compose_train

WRITER = """
import sys, torch
from objmtl.runs.atomic_checkpoint_io import atomic_torch_save
big = torch.arange(30_000_000, dtype=torch.int32)
i = 0
while True:
    atomic_torch_save({"i": i, "x": big}, sys.argv[1])
    i += 1
"""


def test_sigkill_during_writes_leaves_a_loadable_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)])
    try:
        deadline = time.monotonic() + 120
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert path.exists(), "the writer wrote nothing"
        time.sleep(0.3)  # well inside a later write (each is ~120 MB)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["x"].numel() == 30_000_000 and int(ckpt["x"][-1]) == 29_999_999


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"i": 0}, path)

    def broken_save(obj, f, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202 - torch.save's shape
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_torch_save({"i": 1}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"i": 0}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_the_trainer_config_uses_the_atomic_io(tmp_path: Path) -> None:
    trainer = instantiate(compose_train(run_dir=tmp_path).trainer, logger=False, enable_progress_bar=False)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
