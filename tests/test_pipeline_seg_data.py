"""The pipeline scripts train given seg shards with data=seg (its random rescale), and the synthetic set they
write with task=seg's default, data=seg_synth. objmtl-* are replaced by stubs that log their arguments."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STUB = "#!/usr/bin/env bash\necho \"$(basename \"$0\") $*\" >> \"$LOG\"\n"


def _train_lines(script: str, tmp_path: Path, *args: str) -> list[str]:
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    for name in ("objmtl-data", "objmtl-train", "objmtl-test", "objmtl-export", "objmtl-predict", "objmtl-ckpt"):
        (bin_dir / name).write_text(STUB)
        (bin_dir / name).chmod((bin_dir / name).stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "BIN": str(bin_dir), "LOG": str(log)}
    result = subprocess.run([str(REPO / "scripts" / script), "-o", str(tmp_path / "out"), *args], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    return [line for line in log.read_text().splitlines() if line.startswith("objmtl-train")]


@pytest.mark.parametrize("script", ["pipeline_basic.sh", "pipeline_pretrain.sh"])
def test_given_seg_shards_train_with_data_seg(script: str, tmp_path: Path) -> None:
    line = _train_lines(script, tmp_path, "-t", "seg", "-d", str(tmp_path / "shards"))[-1]
    assert line.split()[1:3] == ["task=seg", "data=seg"], line


@pytest.mark.parametrize("script", ["pipeline_basic.sh", "pipeline_pretrain.sh"])
def test_the_written_synthetic_set_keeps_the_task_default(script: str, tmp_path: Path) -> None:
    line = _train_lines(script, tmp_path, "-t", "seg")[-1]
    assert line.split()[1] == "task=seg" and "data=seg" not in line.split(), line


def test_a_data_override_of_the_user_wins(tmp_path: Path) -> None:
    line = _train_lines("pipeline_basic.sh", tmp_path, "-t", "seg", "-d", str(tmp_path / "shards"),
                        "data=seg_synth")[-1]
    assert "data=seg" not in line.split() and "data=seg_synth" in line.split(), line
