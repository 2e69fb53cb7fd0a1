"""The pipelines as scripts: scripts/pipeline_basic.sh end to end on tiny limits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("task", ["cls"])  # det, seg, pose: the same script; their export paths have their own tests
def test_pipeline_basic_packs_trains_tests_exports_verifies_predicts(task: str, synth_root: Path,
                                                                   tmp_path: Path) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "OMP_NUM_THREADS": "2", "PYTHONWARNINGS": "ignore"}
    out = tmp_path / "out"
    result = subprocess.run([str(REPO / "scripts" / "pipeline_basic.sh"), "-t", task, "-d", str(synth_root), "-o",
                             str(out), "debug=fast", "data.image_size=64", "logger=csv"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "onnxruntime equals PyTorch" in result.stdout
    assert (out / "run" / "checkpoints" / "best.ckpt").is_file() and (out / "export" / "model.onnx").is_file()
    assert (out / "export" / "triton" / "model" / "config.pbtxt").is_file()
    assert isinstance(json.loads((out / "predictions.json").read_text()), list)
    assert len(list((out / "predict" / "pictures").glob("*"))) == 8
    assert len(list((out / "show").glob("*.png"))) == 12  # the test split of synth_root, drawn
