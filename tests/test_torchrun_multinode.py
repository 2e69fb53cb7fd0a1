"""The multi-node launch on one machine: two torchrun "nodes" of one process each (c10d rendezvous on
localhost, gloo) train one run into one shared run directory."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_torchrun_nodes_train_into_one_run_directory(synth_root: Path, tmp_path: Path) -> None:
    bin_dir = Path(sys.executable).parent
    runs = tmp_path / "runs"
    launch = [str(bin_dir / "torchrun"), "--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d",
              f"--rdzv-endpoint=127.0.0.1:{_free_port()}", "--rdzv-id=objmtl-test", "--max-restarts=0", "--no-python",
              str(bin_dir / "objmtl-train"), f"data.root={synth_root}", "data.image_size=32", "trainer.max_epochs=1",
              "trainer.limit_train_batches=3", "trainer.limit_val_batches=2", "test_after_fit=false",
              "trainer.accelerator=cpu", "trainer.devices=1", "trainer.num_nodes=2", "trainer.strategy=ddp",
              "data.num_workers=0", "logger=csv", f"paths.runs_dir={runs}", "callbacks.progress_bar.refresh_rate=0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    nodes = [subprocess.Popen(launch, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]
    outputs = [node.communicate(timeout=600)[0] for node in nodes]
    assert [n.returncode for n in nodes] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    run_dirs = list((runs / "cls").iterdir())
    assert len(run_dirs) == 1 and run_dirs[0].name.endswith("_objmtl-test"), run_dirs
    run = run_dirs[0]
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "metrics.json").is_file()
    assert (run / "train.log").is_file() and (run / "train_rank1.log").is_file()
    assert sum("Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in o for o in outputs) == 1
