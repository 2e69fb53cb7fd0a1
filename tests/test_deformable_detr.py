"""Deformable DETR: Hungarian matching, set losses (aux, box refinement, two-stage), post-processing in pixels,
padding invariance, the DetectionTask hooks, the config, and ONNX export with onnxruntime parity at sizes other
than the traced one."""

from __future__ import annotations

import itertools
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from objmtl.data.det_samples import PadCollate
from objmtl.export.detr_graph import DetrGraph, content_sizes
from objmtl.export.graphs import Normalize
from objmtl.export.onnx_export import build_graph, export_onnx, load_for_export
from objmtl.export.preprocess import Preprocessor
from objmtl.export.verify import verify
from objmtl.models import build_backbone
from objmtl.models.detection import DeformableDETR
from objmtl.models.detection.deformable_detr import HungarianMatcher
from objmtl.runs.train import build_task, train
from objmtl.tasks.detection import DetectionTask
from tests.helpers import compose_train, det_target

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _reference_op(monkeypatch: pytest.MonkeyPatch) -> None:
    """The op's pure-PyTorch path: these tests are about the model, and need not wait for the kernel build (the
    op's own tests hold the kernels equal to the reference)."""
    monkeypatch.setenv("OBJMTL_NO_EXT", "1")


TINY = {"d_model": 32, "num_heads": 4, "num_encoder_layers": 1, "num_decoder_layers": 2, "dim_feedforward": 64,
        "num_queries": 12, "norm_groups": 8, "max_detections": 20, "dropout": 0.0}


def _tiny(num_classes: int = 3, **kwargs) -> DeformableDETR:
    torch.manual_seed(0)
    backbone = build_backbone(name="resnet18", out_indices=[1, 2, 3])
    return DeformableDETR(backbone=backbone, num_classes=num_classes, **{**TINY, **kwargs})


def _batch() -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
    """Two images padded to 96 x 128 (the second's content is 80 x 100) with 1 and 2 boxes."""
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, 96, 128, generator=gen)
    images[1, :, 80:] = 0
    images[1, :, :, 100:] = 0
    sizes = torch.tensor([[96, 128], [80, 100]])
    targets = [det_target([[10, 12, 60, 70]], [1]), det_target([[5, 5, 40, 30], [50, 20, 95, 75]], [0, 2])]
    return images, sizes, targets


def test_matcher_finds_the_optimum_that_greedy_misses() -> None:
    # pure L1 cost; target 0 is nearest to query 0, but query 0 is needed for target 1 (query 1 is far from it)
    matcher = HungarianMatcher(cost_class=0.0, cost_bbox=1.0, cost_giou=0.0)
    targets = [{"labels": torch.tensor([0, 0]),
                "boxes": torch.tensor([[0.30, 0.5, 0.2, 0.2], [0.50, 0.5, 0.2, 0.2]])}]
    boxes = torch.tensor([[[0.40, 0.5, 0.2, 0.2], [0.10, 0.5, 0.2, 0.2], [0.95, 0.95, 0.2, 0.2]]])
    (rows, cols), = matcher(torch.zeros(1, 3, 2), boxes, targets)
    assert dict(zip(cols.tolist(), rows.tolist(), strict=True)) == {0: 1, 1: 0}  # total 0.3 (greedy: 0.1 + 0.4)


def test_matcher_minimises_the_full_cost_like_brute_force() -> None:
    gen = torch.Generator().manual_seed(0)
    matcher = HungarianMatcher()
    logits = torch.randn(1, 5, 4, generator=gen)
    boxes = torch.cat([torch.rand(1, 5, 2, generator=gen) * 0.6 + 0.2, torch.rand(1, 5, 2, generator=gen) * 0.3 + 0.05], -1)
    targets = [{"labels": torch.tensor([3, 1, 1]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.1], [0.6, 0.5, 0.3, 0.3],
                                                                          [0.5, 0.7, 0.1, 0.2]])}]
    cost = matcher.cost(logits[0], boxes[0], targets[0]["labels"], targets[0]["boxes"])  # [5, 3]
    best = min(sum(float(cost[q, t]) for t, q in enumerate(p)) for p in itertools.permutations(range(5), 3))
    (rows, cols), = matcher(logits, boxes, targets)
    assert len(rows) == 3 and len(set(rows.tolist())) == 3
    assert float(cost[rows, cols].sum()) == pytest.approx(best, abs=1e-5)
    assert matcher(logits, boxes, [{"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}])[0][
        0].numel() == 0


def test_losses_are_finite_decrease_and_include_every_decoder_layer() -> None:
    model = _tiny()
    images, sizes, targets = _batch()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    history = []
    for _ in range(10):
        losses = model.loss(model(images, sizes), targets)
        assert all(torch.isfinite(v) for v in losses.values()), losses
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
        history.append({k: float(v.detach()) for k, v in losses.items()})
    assert {"loss_cls", "loss_bbox", "loss_giou", "loss_cls_d0", "loss_bbox_d0", "loss_giou_d0"} <= set(losses)
    assert not any(k.endswith("_d1") or k.endswith("_enc") for k in losses)  # d1 is the last layer: no aux copy
    last = history[-1]
    total = sum(w * last[k] for k, w in (("loss_cls", 2), ("loss_bbox", 5), ("loss_giou", 2), ("loss_cls_d0", 2),
                                         ("loss_bbox_d0", 5), ("loss_giou_d0", 2)))
    assert last["loss"] == pytest.approx(total, rel=1e-5)
    assert last["loss"] < 0.8 * history[0]["loss"], [h["loss"] for h in history]
    for term in ("loss_cls", "loss_bbox", "loss_giou"):
        assert last[term] < history[0][term], (term, [h[term] for h in history])


def test_crowd_boxes_and_empty_images_give_finite_losses() -> None:
    model = _tiny()
    images, sizes, _ = _batch()
    targets = [det_target([[10, 12, 60, 70]], [1], crowd=[True]), det_target([], [])]
    losses = model.loss(model(images, sizes), targets)
    assert float(losses["loss_bbox"].detach()) == 0.0 and torch.isfinite(losses["loss_cls"])
    losses["loss"].backward()


@pytest.mark.parametrize("variant", [{"with_box_refine": True}, {"two_stage": True},
                                     {"two_stage": True, "with_box_refine": True}])
def test_box_refinement_and_two_stage_train(variant: dict) -> None:
    model = _tiny(**variant)
    images, sizes, targets = _batch()
    out = model(images, sizes)
    assert out["logits"].shape == (2, 2, 12, 3) and out["boxes"].shape == (2, 2, 12, 4)
    losses = model.loss(out, targets)
    losses["loss"].backward()
    assert torch.isfinite(losses["loss"])
    assert ("loss_giou_enc" in losses) == variant.get("two_stage", False)
    if variant.get("with_box_refine"):  # one head pair per decoder layer (+ the proposals'), each trained
        assert len(model.box_heads) == 2 + int(variant.get("two_stage", False))
        assert all(h.layers[0].weight.grad is not None for h in model.box_heads)
    if variant.get("two_stage"):
        assert out["enc_logits"].shape[:2] == out["enc_boxes"].shape[:2] == (2, 12 * 16 + 6 * 8 + 3 * 4 + 2 * 2)
        assert not hasattr(model.transformer, "query_embed")
    grads = [p.grad for p in model.transformer.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_postprocess_gives_top_k_boxes_in_input_pixels() -> None:
    model = _tiny()
    num_layers, n, q, k = 2, 2, 12, 3
    logits = torch.full((num_layers, n, q, k), -5.0)
    boxes = torch.full((num_layers, n, q, 4), 0.5)
    logits[-1, 1, 4, 2] = 3.0  # image 1's best: query 4, class 2
    boxes[-1, 1, 4] = torch.tensor([0.5, 0.5, 0.5, 0.5])  # (cx, cy, w, h) of the valid 100 x 200 (h x w)
    boxes[-1, 1, 5] = torch.tensor([0.9, 0.9, 0.8, 0.8])  # reaches past the image: clipped
    logits[-1, 1, 5, 0] = 2.0
    sizes = torch.tensor([[96, 128], [100, 200]])
    results = model.postprocess({"logits": logits, "boxes": boxes}, sizes)
    assert [tuple(r["boxes"].shape) for r in results] == [(20, 4), (20, 4)]
    first = results[1]
    assert int(first["labels"][0]) == 2 and float(first["scores"][0]) == pytest.approx(torch.sigmoid(torch.tensor(3.0)))
    torch.testing.assert_close(first["boxes"][0], torch.tensor([50.0, 25.0, 150.0, 75.0]))
    torch.testing.assert_close(first["boxes"][1], torch.tensor([100.0, 50.0, 200.0, 100.0]))
    assert bool((first["scores"][:-1] >= first["scores"][1:]).all())
    for r, (h, w) in zip(results, sizes.tolist(), strict=True):
        assert float(r["boxes"][:, 2].max()) <= w and float(r["boxes"][:, 3].max()) <= h


class _PatchBackbone(nn.Module):
    """C3-C5 from non-overlapping patches (kernel = stride, no bias): a cell sees only its own pixels, and a cell
    of pure padding is exactly 0, as a conv's zero padding is. A ResNet's receptive field would carry content
    into the padded cells, which the next layers' valid cells near the border then see."""

    out_channels = [16, 32, 64]
    strides = [8, 16, 32]

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(3, 16, 8, 8, bias=False), nn.Conv2d(16, 32, 2, 2, bias=False),
                                    nn.Conv2d(32, 64, 2, 2, bias=False)])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for conv in self.convs:
            x = torch.relu(conv(x))
            feats.append(x)
        return feats


@pytest.mark.parametrize("variant", [{}, {"two_stage": True, "with_box_refine": True}])
def test_an_image_padded_differently_gets_the_same_detections(variant: dict) -> None:
    torch.manual_seed(0)
    model = DeformableDETR(backbone=_PatchBackbone(), num_classes=3, **{**TINY, **variant}).eval()
    image = torch.randn(3, 70, 90, generator=torch.Generator().manual_seed(2))
    small, large = torch.zeros(1, 3, 96, 96), torch.zeros(1, 3, 128, 160)
    small[0, :, :70, :90] = image
    large[0, :, :70, :90] = image
    sizes = torch.tensor([[70, 90]])
    with torch.no_grad():
        a = model.postprocess(model(small, sizes), sizes)[0]
        b = model.postprocess(model(large, sizes), sizes)[0]
        unmasked = model.postprocess(model(large), torch.tensor([[128, 160]]))[0]
    torch.testing.assert_close(a["scores"], b["scores"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(a["boxes"], b["boxes"], atol=1e-3, rtol=1e-4)
    assert torch.equal(a["labels"], b["labels"])
    assert not torch.allclose(a["scores"], unmasked["scores"], atol=1e-4)  # the test can fail: padding counts


def test_detection_task_passes_image_sizes_and_scales_learning_rates() -> None:
    model = _tiny()
    task = DetectionTask(model=model, optimizer=partial(torch.optim.AdamW, lr=1e-3))
    images, sizes, targets = _batch()
    out = task(images, sizes)
    assert torch.equal(out["image_sizes"], sizes)
    optimizer = task.configure_optimizers()
    lrs = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert lrs[id(model.backbone.body.conv1.weight)] == pytest.approx(1e-4)
    assert lrs[id(model.transformer.encoder.layers[0].self_attn.sampling_offsets.weight)] == pytest.approx(1e-4)
    assert lrs[id(model.transformer.reference_points.weight)] == pytest.approx(1e-4)
    assert lrs[id(model.transformer.encoder.layers[0].self_attn.value_proj.weight)] == pytest.approx(1e-3)
    assert len(lrs) == sum(1 for p in model.parameters() if p.requires_grad)


def test_task_det_model_deformable_detr_composes(synth_root: Path, tmp_path: Path) -> None:
    cfg = compose_train("task=det", "model=deformable_detr", f"data.root={synth_root}", run_dir=tmp_path)
    task = build_task(cfg)
    assert isinstance(task.model, DeformableDETR) and task.model.num_classes == 4
    assert len(task.model.transformer.decoder.layers) == 6 and task.model.num_queries == 300
    small = compose_train("experiment=det_deformable_detr_small", f"data.root={synth_root}", run_dir=tmp_path)
    model = instantiate(small.model)
    assert len(model.transformer.encoder.layers) == 1 and model.transformer.d_model == 128
    assert small.trainer.gradient_clip_val == 0.1


def test_the_graph_reads_the_valid_sizes_off_the_padding() -> None:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((60, 90), (90, 40), (77, 77))]
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    transform = {"_target_": "albumentations.Compose", "transforms": [
        {"_target_": "albumentations.LongestMaxSize", "max_size": 96},
        {"_target_": "albumentations.Normalize", "mean": mean, "std": std}]}
    for baked, uint8 in ((False, False), (True, False), (True, True)):
        prepared = Preprocessor(eval_transform=transform, task="det", baked=baked, uint8=uint8, mean=mean)(images)
        graph = DetrGraph(model=_tiny(), normalize=Normalize(mean=mean, std=std) if baked else Normalize())
        x = torch.from_numpy(prepared.batch)
        assert content_sizes(x.float(), graph._pad_value(x)).tolist() == [list(v) for v in prepared.valid]
    # and the training collate's zero padding of normalised images
    prepared = Preprocessor(eval_transform=transform, task="det", mean=mean)(images)
    samples = [{"image": torch.from_numpy(prepared.batch[i, :, :h, :w]), **dict.fromkeys(
        ("boxes", "labels", "iscrowd", "difficult", "area", "image_id", "orig_size", "scale"))}
        for i, (h, w) in enumerate(prepared.valid)]
    batch = PadCollate()(samples)
    assert content_sizes(batch["images"], torch.zeros(1, 3, 1, 1)).tolist() == batch["image_sizes"].tolist()


@pytest.fixture(scope="module")
def tiny_detr_run(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Deformable DETR trained for 8 steps on the synthetic shapes (64 px, batch 4)."""
    run_dir = tmp_path_factory.mktemp("detr-run")
    overrides = [f"model.{k}={v}" for k, v in TINY.items()]
    with pytest.MonkeyPatch.context() as patch:  # the reference op, as in every test here
        patch.setenv("OBJMTL_NO_EXT", "1")
        train(compose_train("task=det", "model=deformable_detr", *overrides, f"data.root={synth_root}",
                            "data.num_workers=0", "data.batch_size=4", "data.image_size=64", "trainer.max_epochs=1",
                            "trainer.limit_train_batches=8", "trainer.limit_val_batches=1", "optim.lr=1e-3",
                            "trainer.gradient_clip_val=0.1", "logger=csv", "test_after_fit=false", run_dir=run_dir))
    return run_dir


def test_onnx_export_equals_pytorch_at_batch_1_3_and_another_size(tiny_detr_run: Path, tmp_path: Path) -> None:
    exported = load_for_export(tiny_detr_run / "checkpoints" / "last.ckpt")
    path = export_onnx(exported, out=tmp_path / "detr.onnx", dynamic=True)  # traced at 64 x 64
    graph = build_graph(exported)
    from objmtl.export.images import ImageSource

    images = [im for _, im in ImageSource(exported.config["data"]["root"], split="val", limit=3)]
    images[1] = images[1][:, :40]  # a narrower image: padded in the batch
    prep = Preprocessor(eval_transform=exported.eval_transform, task="det", mean=exported.mean)
    big = Preprocessor(eval_transform={**exported.eval_transform, "transforms": [
        {"_target_": "albumentations.Resize", "height": 96, "width": 160}, *exported.eval_transform["transforms"][1:]]},
        task="det", mean=exported.mean)
    batches = [prep(images[:1]).batch, prep(images).batch, big(images[:2]).batch]
    assert batches[2].shape[2:] == (96, 160) and batches[1].shape[0] == 3
    names = [f"OUTPUT__{i}" for i in range(4)]
    report = verify(graph=graph, onnx_path=path, batches=batches, names=names, detections=True)
    for shape, parity in report:
        assert parity.ok(1e-4), (shape, parity)
    # the graph equals the evaluation path: model(images, image_sizes) + postprocess
    batch = prep(images)
    sizes = torch.tensor(batch.valid)
    with torch.no_grad():
        ours = graph(torch.from_numpy(batch.batch))
        expected = exported.model.postprocess(exported.model(torch.from_numpy(batch.batch), sizes), sizes)
    for i, result in enumerate(expected):
        torch.testing.assert_close(ours[0][i], result["boxes"])
        assert torch.equal(ours[2][i], result["labels"])
