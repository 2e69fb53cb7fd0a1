"""objmtl-test --fuse-conv-bn: BatchNorm folded into convolutions keeps outputs and metrics; --format-only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from objmtl.models import Classifier, build_backbone
from objmtl.models.detection import ATSS
from objmtl.runs.fuse import fuse_conv_bn
from objmtl.runs.train import train
from tests.helpers import compose_train, run_cli

torch.set_num_threads(2)


def _randomise_bn(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small"])
def test_fused_classifier_gives_the_same_outputs(name: str) -> None:
    model = Classifier(backbone=build_backbone(name=name, out_indices=[3]), num_classes=5).eval()
    _randomise_bn(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
        bns = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
        fused = fuse_conv_bn(model)
        after = model(x)
    assert fused == bns > 0  # every BatchNorm of these backbones follows its conv
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)


def test_fused_detector_keeps_its_detections() -> None:
    model = ATSS(backbone=build_backbone(name="resnet18", out_indices=[1, 2, 3]), num_classes=3, fpn_channels=32,
                 num_convs=1, score_thresh=0.0).eval()
    _randomise_bn(model)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        before = model.postprocess(model(x), torch.tensor([[96, 96]] * 2))
        assert fuse_conv_bn(model) == 20  # ResNet-18's; the GroupNorm towers have none
        after = model.postprocess(model(x), torch.tensor([[96, 96]] * 2))
    for a, b in zip(before, after, strict=True):
        torch.testing.assert_close(a["scores"], b["scores"], atol=1e-4, rtol=1e-4)


def test_objmtl_test_fused_metrics_equal_unfused(synth_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(compose_train(f"data.root={synth_root}", "trainer.max_epochs=1", "trainer.limit_train_batches=4",
                        "trainer.limit_val_batches=1", "data.batch_size=8", "data.image_size=48", "data.num_workers=0",
                        "logger=csv", "test_after_fit=false", run_dir=run))
    reports = {}
    for name, extra in (("plain", []), ("fused", ["--fuse-conv-bn"])):
        result = run_cli("objmtl-test", str(run), "--split", "test", "--metrics-out", str(tmp_path / f"{name}.json"),
                         *extra, "data.num_workers=0")
        assert result.returncode == 0, result.stderr
        reports[name] = json.loads((tmp_path / f"{name}.json").read_text())["metrics"]
    assert "fused 20 conv + BatchNorm pairs" in result.stdout
    n_test = 12  # synth_root's test split: one image more or less right is the most folding may change
    assert abs(reports["fused"]["test/acc"] - reports["plain"]["test/acc"]) <= 1 / n_test + 1e-9
    assert reports["fused"]["test/loss"] == pytest.approx(reports["plain"]["test/loss"], abs=1e-3)

    only = run_cli("objmtl-test", str(run), "--split", "test", "--format-only", "--out", str(tmp_path / "p.json"),
                   "data.num_workers=0")
    assert only.returncode == 0, only.stderr
    assert "test/acc" not in only.stdout and len(json.loads((tmp_path / "p.json").read_text())) == n_test
    refused = run_cli("objmtl-test", str(run), "--format-only")
    assert refused.returncode == 2 and refused.stderr.strip() == (
        "error: --format-only writes the predictions only: give --out")
