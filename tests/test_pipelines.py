"""The pipelines as scripts: scripts/pipeline_basic.sh and scripts/pipeline_pretrain.sh end to end on tiny
limits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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


def test_pipeline_pretrain_pretrains_washes_finetunes_tests_exports(synth_root: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "OMP_NUM_THREADS": "2", "PYTHONWARNINGS": "ignore"}
    out = tmp_path / "out"
    pretrain = "model.hidden_dim=256 model.proj_dim=64 model.queue_size=64 data.batch_size=16"
    result = subprocess.run([str(REPO / "scripts" / "pipeline_pretrain.sh"), "-t", "cls", "-d", str(synth_root),
                             "-o", str(out), "-p", pretrain, "-f", "data.batch_size=8", "debug=fast",
                             "data.image_size=32", "logger=csv"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert (out / "pretrain" / "checkpoints" / "best.ckpt").is_file()
    washed = torch.load(out / "backbone.pth", weights_only=True)["model"]
    assert washed and all(k.startswith("backbone.") for k in washed)  # teacher, queues, heads dropped
    # the fine-tune loaded every backbone tensor: only the classifier's head is reported missing
    assert f"loaded {len(washed)} tensors" in result.stdout and "missing keys: fc.weight, fc.bias" in result.stdout
    assert "unexpected keys" not in result.stdout
    assert json.loads((out / "finetune" / "eval_test" / "metrics.json").read_text())["metrics"]["test/acc"] >= 0
    assert "onnxruntime equals PyTorch" in result.stdout
    assert (out / "export" / "triton" / "model" / "config.pbtxt").is_file()
