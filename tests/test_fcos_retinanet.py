"""FCOS and RetinaNet on FPN P3-P7 (the shared dense-detector design): shapes, assignment rules, losses
(empty images, crowd boxes), post-processing, a short overfit, and ``objmtl-train task=det model=...``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from objmtl.models import build_backbone
from objmtl.models.detection import (
    FCOS,
    IGNORED,
    NEGATIVE,
    ConvTower,
    DenseDetector,
    RetinaNet,
    fcos_assign,
    max_iou_assign,
    retinanet_anchors,
)
from tests.helpers import compose_train, det_target

MODELS = {"fcos": FCOS, "retinanet": RetinaNet}


@pytest.fixture(autouse=True)
def _one_thread():
    """Small convs on a shared CPU: one intra-op thread is as fast and does not oversubscribe."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _small(name: str, num_classes: int = 3, **kwargs) -> DenseDetector:
    torch.manual_seed(0)
    backbone = build_backbone(name="resnet18", out_indices=[1, 2, 3])
    return MODELS[name](backbone=backbone, num_classes=num_classes, fpn_channels=64, num_convs=2, **kwargs)


def test_heads_share_the_conv_tower() -> None:
    fcos, retina = _small("fcos"), _small("retinanet")
    for model in (fcos, retina):
        assert model.kind == "det" and model.strides == [8, 16, 32, 64, 128]
        assert isinstance(model.head.cls_tower, ConvTower) and isinstance(model.head.reg_tower, ConvTower)
        assert len(model.head.cls_tower) == 6  # 2 x (conv, GroupNorm, ReLU)
    assert fcos.head.scales is not None and fcos.head.centerness is not None
    assert retina.head.scales is None and retina.head.centerness is None


def test_forward_shapes() -> None:
    sizes = [(12, 16), (6, 8), (3, 4), (2, 2), (1, 1)]
    out = _small("fcos")(torch.randn(2, 3, 96, 128))
    assert set(out) == {"cls_logits", "bbox_deltas", "centerness"}
    assert [tuple(x.shape) for x in out["cls_logits"]] == [(2, 3, h, w) for h, w in sizes]
    assert [tuple(x.shape) for x in out["bbox_deltas"]] == [(2, 4, h, w) for h, w in sizes]
    assert [tuple(x.shape) for x in out["centerness"]] == [(2, 1, h, w) for h, w in sizes]

    model = _small("retinanet")
    out = model(torch.randn(2, 3, 96, 128))
    assert set(out) == {"cls_logits", "bbox_deltas"}
    assert [tuple(x.shape) for x in out["cls_logits"]] == [(2, 27, h, w) for h, w in sizes]
    assert [tuple(x.shape) for x in out["bbox_deltas"]] == [(2, 36, h, w) for h, w in sizes]
    assert [a.shape[0] for a in model.anchors(out)] == [h * w * 9 for h, w in sizes]
    torch.testing.assert_close(model.head.cls_logits.bias, torch.full((27,), -math.log(99.0)))


def test_retinanet_anchors_are_three_scales_by_three_ratios() -> None:
    (anchors,) = retinanet_anchors([(1, 2)], [16], offset=0.5)
    assert anchors.shape == (18, 4)
    first = anchors[:9]  # location (0, 0): centre (8, 8)
    torch.testing.assert_close((first[:, :2] + first[:, 2:]) / 2, torch.full((9, 2), 8.0))
    wh = first[:, 2:] - first[:, :2]  # [9, 2]
    torch.testing.assert_close(wh.prod(1).sqrt()[:3], 16 * 4 * 2 ** (torch.arange(3) / 3))  # octave scales
    torch.testing.assert_close(wh[::3, 1] / wh[::3, 0], torch.tensor([0.5, 1.0, 2.0]))  # h / w ratios
    torch.testing.assert_close(anchors[9:] - anchors[:9], torch.tensor([16.0, 0, 16, 0]).expand(9, 4))


def test_fcos_assigns_by_size_range_and_smallest_area() -> None:
    points = [torch.tensor([[50.0, 50.0]]), torch.tensor([[50.0, 50.0]])]
    boxes = torch.tensor([[40.0, 40, 60, 60], [0, 0, 150, 150], [30, 30, 70, 70]])
    ranges = [(-1, 64), (64, 128)]
    matched = fcos_assign(points, [8, 16], boxes, regress_ranges=ranges, center_sampling_radius=None)
    assert matched.tolist() == [0, 1]  # P3: the smaller of boxes 0 and 2; P4: box 1 (reach 100)
    matched = fcos_assign(points, [8, 16], boxes[2:], regress_ranges=ranges, center_sampling_radius=None)
    assert matched.tolist() == [0, NEGATIVE]
    crowd = torch.tensor([False, True, False])
    matched = fcos_assign(points, [8, 16], boxes, regress_ranges=ranges, gt_ignore=crowd)
    assert matched.tolist() == [0, IGNORED]  # crowd box 1 makes no positive; its points are ignored
    off_centre = fcos_assign([torch.tensor([[12.0, 12.0]])], [8], torch.tensor([[10.0, 10, 60, 60]]),
                             regress_ranges=[(-1, 64)], center_sampling_radius=1.5)
    assert off_centre.tolist() == [NEGATIVE]  # inside the box but 23 px (> 1.5 strides) from its centre


def test_max_iou_assign_thresholds_and_low_quality_matches() -> None:
    anchors = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 14], [0, 0, 10, 22], [50, 50, 60, 60]])
    box = torch.tensor([[0.0, 0, 10, 20]])  # IoUs 0.5, 0.7, 0.909..., 0
    assert max_iou_assign(anchors, box).tolist() == [0, 0, 0, NEGATIVE]
    far = torch.tensor([[0.0, 0, 10, 40]])  # IoUs 0.25, 0.35, 0.55: only the last is positive
    assert max_iou_assign(anchors, far).tolist() == [NEGATIVE, NEGATIVE, 0, NEGATIVE]
    mid = torch.tensor([[0.0, 0, 10, 23]])  # IoUs 0.43, 0.61, 0.96, 0 -> [ignored, pos, pos, neg]
    assert max_iou_assign(anchors, mid, pos_iou_thr=0.5).tolist() == [IGNORED, 0, 0, NEGATIVE]
    small = torch.tensor([[50.0, 50, 52, 52]])  # best IoU 0.04: kept only as a low-quality match
    assert max_iou_assign(anchors, small).tolist() == [NEGATIVE] * 3 + [0]
    assert max_iou_assign(anchors, small, low_quality=False).tolist() == [NEGATIVE] * 4
    crowd = max_iou_assign(anchors, torch.tensor([[0.0, 0, 100, 100]]), gt_ignore=torch.tensor([True]))
    assert crowd.tolist() == [IGNORED] * 4


@pytest.mark.parametrize("name", sorted(MODELS))
def test_losses_are_finite_with_an_image_without_boxes(name: str) -> None:
    model = _small(name)
    out = model(torch.randn(2, 3, 64, 96))
    targets = [det_target([[8, 8, 40, 50], [50, 10, 90, 60], [0, 0, 30, 30]], [0, 2, 1], [False, False, True]),
               det_target([], [])]
    losses = model.loss(out, targets)
    expected = {"loss", "loss_cls", "loss_bbox"} | ({"loss_centerness"} if name == "fcos" else set())
    assert set(losses) == expected
    for value in losses.values():
        assert value.ndim == 0 and torch.isfinite(value) and value.requires_grad
    assert float(losses["loss_bbox"].detach()) > 0
    losses["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)

    empty = model.loss(model(torch.randn(2, 3, 64, 64)), [det_target([], []), det_target([], [])])
    assert all(torch.isfinite(v) and v.requires_grad for v in empty.values())
    assert float(empty["loss_bbox"].detach()) == 0.0 and float(empty["loss_cls"].detach()) > 0
    empty["loss"].backward()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_losses_and_detections_under_bf16_autocast(name: str) -> None:
    model = _small(name, score_thresh=0.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(1, 3, 64, 64))
        losses = model.loss(out, [det_target([[8, 8, 40, 50]], [1])])
        dets = model.postprocess(out, torch.tensor([[64, 64]]))
    assert out["cls_logits"][0].dtype == torch.bfloat16
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    assert dets[0]["boxes"].dtype == torch.float32 and len(dets[0]["boxes"]) > 0


@pytest.mark.parametrize("name", sorted(MODELS))
def test_postprocess_caps_detections_and_clips_to_the_valid_size(name: str) -> None:
    model = _small(name, score_thresh=0.0, max_detections=7, nms_thresh=0.9)
    model.eval()
    with torch.no_grad():
        model.head.cls_logits.bias.fill_(2.0)  # many confident candidates
        out = model(torch.randn(2, 3, 96, 128))
    sizes = torch.tensor([[96, 128], [50, 70]])
    dets = model.postprocess(out, sizes)
    for det, (h, w) in zip(dets, sizes.tolist(), strict=True):
        assert 0 < len(det["boxes"]) <= 7
        assert det["boxes"].shape == (len(det["scores"]), 4) and det["labels"].shape == det["scores"].shape
        assert (det["boxes"] >= 0).all() and (det["boxes"][:, [0, 2]] <= w).all()
        assert (det["boxes"][:, [1, 3]] <= h).all()
        assert (det["scores"][:-1] >= det["scores"][1:]).all() and (det["scores"] <= 1).all()
        assert det["labels"].min() >= 0 and det["labels"].max() < 3
    model.score_thresh = 1.0  # nothing scores above 1: empty results, right shapes
    assert all(d["boxes"].shape == (0, 4) and d["scores"].shape == (0,) for d in model.postprocess(out, sizes))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_fcos_and_retinanet_losses_fall_over_a_short_run(name: str, synth_root: Path) -> None:
    from objmtl.data.datamodule import ShardDataModule

    dm = ShardDataModule(root=str(synth_root), task="det", batch_size=4, eval_batch_size=4, num_workers=0)
    batch = next(iter(dm.val_dataloader()))  # 4 images, [4, 3, 64, 64], scaled to [0, 1]
    assert all(len(t["boxes"]) >= 1 for t in batch["targets"])
    model = _small(name, num_classes=4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    history = []
    for _ in range(30):
        loss = model.loss(model(batch["images"]), batch["targets"])["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    final = sum(history[-5:]) / 5
    assert final < 0.7 * history[0], history


@pytest.mark.parametrize("name", sorted(MODELS))
def test_train_det_fast(name: str, synth_root: Path, tmp_path: Path) -> None:
    from objmtl.runs.train import train

    cfg = compose_train("task=det", f"model={name}", "debug=fast", f"data.root={synth_root}",
                        "data.batch_size=8", "data.eval_batch_size=8", "model.fpn_channels=64", "model.num_convs=2",
                        run_dir=tmp_path)
    assert cfg.model._target_ == f"objmtl.models.detection.{MODELS[name].__name__}"
    assert list(cfg.model.backbone.out_indices) == [1, 2, 3]
    train(cfg)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("map", "map_50", "loss"):
        assert f"val/{key}" in metrics["val"] and f"test/{key}" in metrics["test"]
    assert math.isfinite(metrics["val"]["val/loss"])
    assert (tmp_path / "checkpoints" / "best.ckpt").is_file()


def test_the_base_holds_no_method_and_neck_and_head_come_from_config() -> None:
    """DenseDetector is abstract (each detector holds its own rules); a config replaces neck and head."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    with pytest.raises(TypeError, match="abstract"):
        DenseDetector(backbone=torch.nn.Identity(), neck=torch.nn.Identity(), head=torch.nn.Identity(),
                      num_classes=1, bbox_loss_weight=1.0, nms_thresh=0.5)
    cfg = OmegaConf.create({
        "_target_": "objmtl.models.detection.ATSS", "num_classes": 3,
        "backbone": {"_target_": "objmtl.models.build_backbone", "name": "resnet18", "out_indices": [1, 2, 3]},
        "neck": {"_target_": "objmtl.models.detection.FPN", "_partial_": True, "out_channels": 32,
                 "extra_levels": False},
        "head": {"_target_": "objmtl.models.detection.DenseHead", "_partial_": True, "num_convs": 1,
                 "num_anchors": 1, "centerness": False, "scales": True}})
    model = instantiate(cfg)
    assert model.strides == [8, 16, 32] and len(model.head.cls_tower) == 3  # one conv + GN + ReLU block
    outputs = model(torch.rand(1, 3, 64, 64))
    assert set(outputs) == {"cls_logits", "bbox_deltas"} and outputs["cls_logits"][0].shape == (1, 3, 8, 8)
    with pytest.raises(ValueError, match="centerness output"):  # ATSS's losses need the centerness logit
        model.loss(outputs, [det_target([[8.0, 8.0, 40.0, 40.0]], [1])])
