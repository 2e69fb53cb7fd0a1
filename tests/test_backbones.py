"""Tests for objmtl.models.backbones: shapes per family, freezing, norm_eval and weight loading."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torch import nn

from objmtl.errors import UserError
from objmtl.models.backbones import BACKBONE_NAMES, Backbone, _resolve_weights, build_backbone

torch.set_num_threads(1)  # 2 threads is 10x slower when another process holds a core

STRIDES = [4, 8, 16, 32]
# Channels of C2..C5, taken from the torchvision architectures (not from the code under test).
EXPECTED_CHANNELS = {
    "resnet18": [64, 128, 256, 512],
    "resnet34": [64, 128, 256, 512],
    "resnet50": [256, 512, 1024, 2048],
    "resnet101": [256, 512, 1024, 2048],
    "mobilenet_v3_small": [16, 24, 48, 576],
    "mobilenet_v3_large": [24, 40, 112, 960],
    "efficientnet_b0": [24, 40, 112, 1280],
    "convnext_tiny": [96, 192, 384, 768],
    "regnet_y_400mf": [48, 104, 208, 440],
    "regnet_x_400mf": [32, 64, 160, 400],
}


def _bns(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]


def test_expected_table_covers_every_name() -> None:
    assert set(EXPECTED_CHANNELS) == set(BACKBONE_NAMES)


@pytest.mark.parametrize("name", BACKBONE_NAMES)
def test_channels_strides_and_forward(name: str) -> None:
    torch.manual_seed(0)
    bb = build_backbone(name=name)
    assert isinstance(bb, Backbone) and bb.name == name
    assert bb.training
    assert bb.out_channels == EXPECTED_CHANNELS[name]
    assert bb.strides == STRIDES
    bb.eval()
    h, w = 70, 90  # not multiples of 32
    with torch.no_grad():
        feats = bb(torch.randn(2, 3, h, w))
    assert len(feats) == 4
    for f, c, s in zip(feats, EXPECTED_CHANNELS[name], STRIDES, strict=True):
        assert f.shape[:2] == (2, c)
        assert abs(f.shape[2] - math.ceil(h / s)) <= 1, (f.shape, s)
        assert abs(f.shape[3] - math.ceil(w / s)) <= 1, (f.shape, s)


def test_out_indices_subset() -> None:
    bb = build_backbone(name="resnet50", out_indices=(1, 2, 3))
    assert bb.out_channels == [512, 1024, 2048]
    assert bb.strides == [8, 16, 32]
    feats = bb(torch.randn(1, 3, 96, 64))
    assert [tuple(f.shape) for f in feats] == [(1, 512, 12, 8), (1, 1024, 6, 4), (1, 2048, 3, 2)]


def test_out_indices_invalid() -> None:
    with pytest.raises(UserError, match="out_indices"):
        build_backbone(name="resnet18", out_indices=(0, 4))


def test_frozen_stages_one() -> None:
    bb = build_backbone(name="resnet18", frozen_stages=1)
    params = dict(bb.body.named_parameters())
    assert not params["conv1.weight"].requires_grad
    assert not params["bn1.weight"].requires_grad
    assert all(not p.requires_grad for n, p in params.items() if n.startswith("layer1."))
    assert all(p.requires_grad for n, p in params.items() if n.startswith(("layer2.", "layer3.", "layer4.")))

    bb.train()
    assert bb.training
    assert not bb.body.bn1.training
    assert all(not m.training for m in _bns(bb.body.layer1))
    assert all(m.training for m in _bns(bb.body.layer2))

    running_mean = bb.body.get_submodule("layer1.0.bn1").running_mean.clone()
    sum(f.mean() for f in bb(torch.randn(2, 3, 64, 64))).backward()
    assert torch.equal(bb.body.get_submodule("layer1.0.bn1").running_mean, running_mean)
    for n, p in params.items():
        if n.startswith(("conv1.", "bn1.", "layer1.")):
            assert p.grad is None, n
    assert params["layer2.0.conv1.weight"].grad is not None


def test_frozen_stages_mobilenet_prefix_is_exact() -> None:
    # features.1 (C2) is frozen with frozen_stages=1, features.10..12 (C5) must stay trainable.
    bb = build_backbone(name="mobilenet_v3_small", frozen_stages=1)
    params = dict(bb.body.named_parameters())
    assert all(not p.requires_grad for n, p in params.items() if n.startswith(("features.0.", "features.1.")))
    assert all(p.requires_grad for n, p in params.items() if n.startswith(("features.10.", "features.12.")))


def test_norm_eval() -> None:
    bb = build_backbone(name="resnet18", norm_eval=True)
    bb.train()
    bns = _bns(bb)
    assert bns and all(not m.training for m in bns)
    assert bb.training and bb.body.layer1.training
    before = [m.running_mean.clone() for m in bns]
    bb(torch.randn(2, 3, 64, 64))
    assert all(torch.equal(m.running_mean, b) for m, b in zip(bns, before, strict=True))


def test_train_mode_updates_bn_without_norm_eval() -> None:
    # Control for test_norm_eval: the same check must fail when norm_eval is off.
    bb = build_backbone(name="resnet18")
    before = bb.body.bn1.running_mean.clone()
    bb(torch.randn(2, 3, 64, 64))
    assert not torch.equal(bb.body.bn1.running_mean, before)


@pytest.fixture(scope="module")
def resnet18_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(123)
    return torchvision.models.resnet18().state_dict()


@pytest.mark.parametrize("wrap", ["raw", "state_dict_backbone_prefix", "model_key"])
def test_weights_from_local_file(tmp_path, resnet18_state, wrap: str) -> None:
    if wrap == "raw":
        obj = resnet18_state
    elif wrap == "state_dict_backbone_prefix":
        obj = {"state_dict": {"backbone." + k: v for k, v in resnet18_state.items()}, "epoch": 3}
    else:
        obj = {"model": {"model.backbone." + k: v for k, v in resnet18_state.items()}}
    path = tmp_path / "r18.pth"
    torch.save(obj, path)
    torch.manual_seed(7)  # different random init than the saved weights
    bb = build_backbone(name="resnet18", weights=str(path))
    assert torch.equal(bb.body.conv1.weight, resnet18_state["conv1.weight"])
    assert torch.equal(
        bb.body.get_submodule("layer4.1.bn2").running_var, resnet18_state["layer4.1.bn2.running_var"]
    )


def test_weights_missing_path(tmp_path) -> None:
    path = str(tmp_path / "nope.pth")
    with pytest.raises(UserError, match="nope.pth"):
        build_backbone(name="resnet18", weights=path)


def test_weights_file_without_matching_keys(tmp_path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"foo.bar": torch.zeros(3)}, path)
    with pytest.raises(UserError, match="other.pt"):
        build_backbone(name="resnet18", weights=str(path))


def test_unknown_backbone_name() -> None:
    with pytest.raises(UserError, match="resnet18") as info:
        build_backbone(name="resnet9000")
    assert "resnet9000" in str(info.value)


def test_resolve_weights_name() -> None:
    member = _resolve_weights("resnet18", "IMAGENET1K_V1")
    assert member is torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    assert _resolve_weights("resnet50", "DEFAULT") is torchvision.models.ResNet50_Weights.DEFAULT


def test_unknown_weights_name() -> None:
    with pytest.raises(UserError, match="NOT_A_WEIGHT"):
        _resolve_weights("resnet18", "NOT_A_WEIGHT")
    with pytest.raises(UserError, match="NOT_A_WEIGHT"):
        build_backbone(name="resnet18", weights="NOT_A_WEIGHT")


# Index of the last block of `model.features` at strides 4, 8, 16, 32 (channels alone cannot tell e.g.
# mobilenet_v3_small features.7 from features.8: both give 48 channels at stride 16).
LAST_FEATURE_BLOCK = {
    "mobilenet_v3_small": [1, 3, 8, 12],
    "mobilenet_v3_large": [3, 6, 12, 16],
    "efficientnet_b0": [2, 3, 5, 8],
    "convnext_tiny": [1, 3, 5, 7],
}


@pytest.mark.parametrize("name", sorted(LAST_FEATURE_BLOCK))
def test_levels_are_last_block_at_each_stride(name: str) -> None:
    model = torchvision.models.get_model(name).eval()
    with torch.no_grad():  # convnext inits layer_scale to 1e-6, hiding its blocks; make them count
        for pname, p in model.named_parameters():
            if pname.endswith("layer_scale"):
                p.fill_(1.0)
    bb = Backbone(name=name, model=model).eval()  # shares the modules of `model`
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats = bb(x)
        blocks, h = [], x  # blocks[j]: output of model.features[: j + 1], [1, C_j, h_j, w_j]
        for block in model.features:
            h = block(h)
            blocks.append(h)
    for f, last in zip(feats, LAST_FEATURE_BLOCK[name], strict=True):
        expected = blocks[last]
        # Relative check: random-init activations can be tiny (~1e-5), so an absolute atol means nothing.
        assert f.shape == expected.shape, (name, last)
        assert (f - expected).norm() <= 1e-4 * expected.norm(), (name, last)
    # The block after each level's last one changes the stride.
    for last in LAST_FEATURE_BLOCK[name][:3]:
        assert blocks[last + 1].shape[-1] < blocks[last].shape[-1], (name, last)
