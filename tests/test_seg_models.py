"""Segmentation models on the backbone factory, their losses, and whole vs sliding-window inference."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from objmtl.errors import UserError
from objmtl.models import build_backbone
from objmtl.models.segmentation import (
    FCN,
    DeepLabV3,
    SegmentationLoss,
    SemanticFPN,
    dice_loss,
    slide_inference,
)
from objmtl.models.segmentation.inference import window_starts

torch.set_num_threads(2)


def _fpn(name: str = "resnet18", out_indices=(0, 1, 2, 3), **kw) -> SemanticFPN:
    return SemanticFPN(backbone=build_backbone(name=name, out_indices=out_indices), num_classes=5,
                       fpn_channels=32, head_channels=32, **kw)


@pytest.mark.parametrize("build", [
    lambda: _fpn(),
    lambda: _fpn("mobilenet_v3_small", (1, 2, 3)),
    lambda: DeepLabV3(backbone=build_backbone(name="resnet18", out_indices=[2, 3]), num_classes=5),
    lambda: FCN(backbone=build_backbone(name="regnet_x_400mf", out_indices=[2, 3]), num_classes=5),
], ids=["fpn_r18_c2c5", "fpn_mnv3_c3c5", "deeplabv3_r18", "fcn_regnet"])
def test_logits_come_back_at_the_input_size(build) -> None:
    model = build()
    assert model.kind == "seg" and model.num_classes == 5
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 70, 97))  # not a multiple of the stride
    assert set(out) == {"out"} and out["out"].shape == (2, 5, 70, 97)


def test_the_aux_head_runs_in_training_only() -> None:
    model = DeepLabV3(backbone=build_backbone(name="resnet18", out_indices=[2, 3]), num_classes=3, aux_head=True)
    out = model(torch.randn(2, 3, 64, 64))
    assert out["aux"].shape == out["out"].shape == (2, 3, 64, 64)
    model.eval()
    assert set(model(torch.randn(1, 3, 64, 64))) == {"out"}


def test_configuration_mistakes_are_one_line() -> None:
    with pytest.raises(UserError, match="model.num_classes is 0"):
        _fpn().__class__(backbone=build_backbone(name="resnet18"), num_classes=0)
    with pytest.raises(UserError, match="aux_head=true needs two backbone levels"):
        FCN(backbone=build_backbone(name="resnet18", out_indices=[3]), num_classes=3, aux_head=True)
    model = DeepLabV3(backbone=build_backbone(name="resnet18", out_indices=[3]), num_classes=3)
    with pytest.raises(UserError, match="batches of 2 or more"):
        model(torch.randn(1, 3, 64, 64))


def test_loss_terms_ignore_255_and_never_nan() -> None:
    logits = torch.randn(2, 4, 8, 8, requires_grad=True)
    target = torch.randint(0, 4, (2, 8, 8))
    loss = SegmentationLoss(dice_weight=0.5, aux_weight=0.4)
    terms = loss({"out": logits, "aux": logits}, target)
    assert set(terms) == {"loss", "loss_ce", "loss_aux", "loss_dice"}
    assert torch.isclose(terms["loss"], terms["loss_ce"] + terms["loss_aux"] + terms["loss_dice"])
    ignored = loss({"out": logits}, torch.full((2, 8, 8), 255))
    assert float(ignored["loss"].detach()) == 0.0
    ignored["loss"].backward()  # still a graph: an unlabeled batch does not break the step
    # ignored pixels don't change the loss
    partly = target.clone()
    partly[:, :4] = 255
    changed = logits.detach().clone()
    changed[:, :, :4] = 100.0
    a = SegmentationLoss()({"out": logits.detach()}, partly)["loss"]
    b = SegmentationLoss()({"out": changed}, partly)["loss"]
    assert torch.isclose(a, b)


def test_dice_is_zero_for_a_perfect_prediction_and_high_for_a_wrong_one() -> None:
    target = torch.randint(0, 3, (1, 16, 16))
    perfect = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float() * 50
    assert float(dice_loss(perfect, target)) == pytest.approx(0.0, abs=1e-4)
    wrong = torch.nn.functional.one_hot((target + 1) % 3, 3).permute(0, 3, 1, 2).float() * 50
    assert float(dice_loss(wrong, target)) > 0.9


def test_window_starts_cover_the_side_and_end_at_it() -> None:
    assert window_starts(100, 32, 20) == [0, 20, 40, 60, 68]
    assert window_starts(64, 32, 32) == [0, 32]
    assert window_starts(20, 32, 20) == [0]


class _Pointwise(nn.Module):
    """A model whose output at a pixel depends on that pixel only (1x1 convs): no context."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 4, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


@pytest.mark.parametrize("size,window,stride", [((70, 100), 32, 20), ((64, 96), 32, 32), ((20, 50), 32, None)])
def test_sliding_window_equals_whole_image_without_context(size, window, stride) -> None:
    model = _Pointwise().eval()
    images = torch.randn(2, 3, *size)
    with torch.no_grad():
        whole = model(images)
    slid = slide_inference(model, images, window=window, stride=stride)
    assert slid.shape == whole.shape
    assert torch.allclose(slid, whole, atol=1e-5)


def test_sliding_window_on_a_real_model_has_the_right_shape_and_one_window_is_whole() -> None:
    model = _fpn().eval()
    images = torch.randn(1, 3, 80, 112)
    with torch.no_grad():
        whole = model(images)["out"]
        slid = slide_inference(lambda x: model(x)["out"], images, window=64, stride=32)
        one = slide_inference(lambda x: model(x)["out"], images, window=[80, 112])
    assert slid.shape == whole.shape == (1, 5, 80, 112)
    assert torch.allclose(one, whole, atol=1e-5)
