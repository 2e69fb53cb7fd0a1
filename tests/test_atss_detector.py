"""ATSS on FPN P3-P7: shapes, losses (empty images, crowd boxes), post-processing, a short overfit, and
``objmtl-train task=det debug=fast`` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from objmtl.models import build_backbone
from objmtl.models.detection import ATSS, IGNORED, atss_assign
from objmtl.tasks.detection import DetectionTask
from tests.helpers import compose_train, det_target

torch.set_num_threads(2)


def _small_atss(num_classes: int = 3, **kwargs) -> ATSS:
    torch.manual_seed(0)
    backbone = build_backbone(name="resnet18", out_indices=[1, 2, 3])
    return ATSS(backbone=backbone, num_classes=num_classes, fpn_channels=64, num_convs=2, **kwargs)


def test_forward_gives_one_map_per_level_with_its_stride() -> None:
    model = _small_atss()
    assert model.kind == "det" and model.strides == [8, 16, 32, 64, 128]
    assert model.neck.out_channels == [64] * 5
    out = model(torch.randn(2, 3, 96, 128))
    sizes = [(12, 16), (6, 8), (3, 4), (2, 2), (1, 1)]
    assert [tuple(x.shape) for x in out["cls_logits"]] == [(2, 3, h, w) for h, w in sizes]
    assert [tuple(x.shape) for x in out["bbox_deltas"]] == [(2, 4, h, w) for h, w in sizes]
    assert [tuple(x.shape) for x in out["centerness"]] == [(2, 1, h, w) for h, w in sizes]
    # prior_prob 0.01: every classification logit starts at -log(99)
    torch.testing.assert_close(model.head.cls_logits.bias, torch.full((3,), -torch.log(torch.tensor(99.0))))


def test_losses_are_finite_with_an_image_without_boxes() -> None:
    model = _small_atss()
    out = model(torch.randn(2, 3, 64, 96))
    targets = [det_target([[8, 8, 40, 50], [50, 10, 90, 60]], [0, 2]), det_target([], [])]
    losses = model.loss(out, targets)
    assert set(losses) == {"loss", "loss_cls", "loss_bbox", "loss_centerness"}
    for value in losses.values():
        assert value.ndim == 0 and torch.isfinite(value) and value.requires_grad
    assert float(losses["loss_bbox"].detach()) > 0
    losses["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)

    empty = model.loss(model(torch.randn(2, 3, 64, 64)), [det_target([], []), det_target([], [])])
    assert all(torch.isfinite(v) and v.requires_grad for v in empty.values())
    assert float(empty["loss_bbox"].detach()) == 0.0 and float(empty["loss_centerness"].detach()) == 0.0
    assert float(empty["loss_cls"].detach()) > 0  # every anchor is a negative
    empty["loss"].backward()


def test_losses_and_detections_under_bf16_autocast() -> None:
    model = _small_atss(score_thresh=0.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(1, 3, 64, 64))
        losses = model.loss(out, [det_target([[8, 8, 40, 50]], [1])])
        dets = model.postprocess(out, torch.tensor([[64, 64]]))
    assert out["cls_logits"][0].dtype == torch.bfloat16
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    assert dets[0]["boxes"].dtype == torch.float32 and len(dets[0]["boxes"]) > 0

def test_anchors_under_a_crowd_box_contribute_nothing() -> None:
    model = _small_atss()
    out = {k: [x.detach().requires_grad_() for x in v] for k, v in model(torch.randn(1, 3, 128, 128)).items()}
    target = det_target([[4, 4, 40, 40], [60, 60, 128, 128]], [1, 0], crowd=[False, True])
    model.loss(out, [target])["loss"].backward()
    matched = atss_assign(model.anchors(out), target["boxes"], gt_ignore=target["iscrowd"]).matched_gt
    grads = torch.cat([g.grad[0].permute(1, 2, 0).reshape(-1, 3) for g in out["cls_logits"]])  # [A, K]
    assert (matched == IGNORED).any() and (matched >= 0).any()
    assert grads[matched == IGNORED].abs().max() == 0
    assert grads[matched != IGNORED].abs().max() > 0


def test_postprocess_caps_detections_and_clips_to_the_valid_size() -> None:
    model = _small_atss(score_thresh=0.0, max_detections=7, nms_thresh=0.9)
    model.eval()
    with torch.no_grad():
        model.head.cls_logits.bias.fill_(2.0)  # many confident candidates
        out = model(torch.randn(2, 3, 96, 128))
    sizes = torch.tensor([[96, 128], [50, 70]])
    dets = model.postprocess(out, sizes)
    assert len(dets) == 2
    for det, (h, w) in zip(dets, sizes.tolist(), strict=True):
        assert 0 < len(det["boxes"]) <= 7
        assert det["boxes"].shape == (len(det["scores"]), 4) and det["labels"].shape == det["scores"].shape
        assert (det["boxes"] >= 0).all() and (det["boxes"][:, [0, 2]] <= w).all()
        assert (det["boxes"][:, [1, 3]] <= h).all()
        assert (det["scores"][:-1] >= det["scores"][1:]).all()
        assert det["labels"].min() >= 0 and det["labels"].max() < 3

    model.score_thresh = 1.0  # nothing scores above 1: empty results, right shapes
    none = model.postprocess(out, sizes)
    assert all(d["boxes"].shape == (0, 4) and d["scores"].shape == (0,) for d in none)


def test_evaluation_maps_boxes_back_to_the_original_size() -> None:
    target = {**det_target([[10, 20, 30, 60]], [1]), "area": torch.tensor([800.0]), "scale": (2.0, 0.5)}
    pred = {"boxes": torch.tensor([[10.0, 20, 30, 60]]), "scores": torch.tensor([0.9]),
            "labels": torch.tensor([1])}
    task = DetectionTask(model=_small_atss())
    preds, targets = task._original_size({"targets": [target]}, [pred])
    expected = torch.tensor([[20.0, 10, 60, 30]])  # x / sx, y / sy
    torch.testing.assert_close(preds[0]["boxes"], expected)
    torch.testing.assert_close(targets[0]["boxes"], expected)
    torch.testing.assert_close(targets[0]["area"], torch.tensor([800.0]))  # sy * sx = 1
    assert targets[0]["iscrowd"].tolist() == [0]


def test_a_few_synthetic_images_are_overfit(synth_root: Path) -> None:
    from objmtl.data.datamodule import ShardDataModule

    dm = ShardDataModule(root=str(synth_root), task="det", batch_size=4, eval_batch_size=4, num_workers=0)
    batch = next(iter(dm.val_dataloader()))  # 4 images, [4, 3, 64, 64], scaled to [0, 1]
    assert all(len(t["boxes"]) >= 1 for t in batch["targets"])
    torch.manual_seed(0)
    model = ATSS(backbone=build_backbone(name="resnet18", out_indices=[1, 2, 3]), num_classes=4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    history = []
    for _ in range(40):
        loss = model.loss(model(batch["images"]), batch["targets"])["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(loss))
    final = sum(history[-5:]) / 5
    assert final < 0.6 * history[0], history


def test_train_det_fast_logs_map(synth_root: Path, tmp_path: Path) -> None:
    from objmtl.runs.train import train

    cfg = compose_train("task=det", "debug=fast", f"data.root={synth_root}", "data.batch_size=8",
                        "data.eval_batch_size=8", run_dir=tmp_path)
    assert cfg.model._target_ == "objmtl.models.detection.ATSS" and cfg.task.main_metric == "val/map_50"
    summary = train(cfg)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(summary))
    for key in ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_100", "loss"):
        assert f"val/{key}" in metrics["val"] and f"test/{key}" in metrics["test"]
    assert metrics["best"]["metric"] == "val/map_50"
    assert (tmp_path / "checkpoints" / "best.ckpt").is_file()


def test_the_model_config_is_a_det_model(synth_root: Path, tmp_path: Path) -> None:
    from hydra.utils import get_class

    cfg = compose_train("task=det", f"data.root={synth_root}", run_dir=tmp_path)
    assert get_class(cfg.model._target_).kind == "det"
    assert list(cfg.model.backbone.out_indices) == [1, 2, 3]
