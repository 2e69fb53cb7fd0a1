"""Mask R-CNN-R18 from scratch on 8 real images with instance polygons (train = val): the curve of segm AP50.

Subsets: ``lightly-a`` / ``lightly-b`` (coco128-val-lightly's YOLO-seg instance labels, the first / next 8 images
that have instances) and ``coco8`` (coco8-seg's 8 images). Each is converted with the CLI, written as both the
train and the val split, and trained with objmtl's task=inst (``--impl objmtl``) or with torchvision's own
``maskrcnn_resnet50_fpn`` recipe with a resnet18 FPN backbone (``--impl torchvision``: its own
GeneralizedRCNNTransform resizing to the same size, the same optimizer and steps), evaluated with the same
metric. Prints one line per evaluation: step, seconds, segm AP50, bbox AP50.

    python bench/inst_overfit.py --subset lightly-a --steps 300 --eval-every 50
    python bench/inst_overfit.py --subset lightly-a --impl torchvision --steps 300 --eval-every 50
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from objmtl.tasks.instance import InstanceTask  # noqa: E402
from tests.helpers import compose_train, run_cli, train_equals_val  # noqa: E402

_TASK: InstanceTask

DATA = ROOT.parent / "shared" / "data" / "segmentation"


def convert(subset: str, tmp: Path) -> Path:
    """The 8 images of ``subset`` as train = val shards."""
    converted = tmp / "converted"
    if subset.startswith("lightly"):
        src = DATA / "coco128-val-lightly"
        args = ["--images", "images/val2017", "--labels", "instance_segmentation/labels/val2017",
                "--names", "instance_segmentation/config.yaml"]
    else:
        src = DATA / "coco8-seg"
        args = ["--images", "images", "--labels", "labels", "--names",
                str(DATA.parent / "detection" / "coco128" / "config.yaml")]
    result = run_cli("objmtl-data", "convert", "--format", "yolo", "--src", str(src), *args, "--task", "seg",
                     "--val-fraction", "0", "--workers", "1", "--out", str(converted))
    if result.returncode:
        raise SystemExit(result.stderr)
    return train_equals_val(converted, tmp / "eight", need="polygons", start=8 if subset == "lightly-b" else 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subset", choices=("lightly-a", "lightly-b", "coco8"), default="lightly-a")
    ap.add_argument("--impl", choices=("objmtl", "torchvision"), default="objmtl")
    ap.add_argument("--model", choices=("mask_rcnn", "mask_rcnn_small"), default="mask_rcnn",
                    help="objmtl's config (resnet18 either way); mask_rcnn has torchvision's head sizes")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("overrides", nargs="*", help="more objmtl config overrides (model.*)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from hydra.utils import instantiate

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        root = convert(a.subset, tmp)
        cfg = compose_train("task=inst", f"model={a.model}", "model.backbone.name=resnet18", f"data.root={root}",
                            "data.num_workers=0",
                            "data.batch_size=4", f"data.image_size={a.size}", f"seed={a.seed}",
                            "model.anchor_sizes=[[32],[64],[128],[256],[512]]", *a.overrides, run_dir=tmp / "run")
        torch.manual_seed(a.seed)
        dm = instantiate(cfg.data)
        dm.setup("fit")
        if a.impl == "objmtl":
            model = instantiate(cfg.model)
        else:
            from torchvision.models.detection import MaskRCNN
            from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

            backbone = resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5,
                                           norm_layer=torch.nn.BatchNorm2d)
            model = MaskRCNN(backbone, num_classes=cfg.model.num_classes + 1, min_size=a.size, max_size=a.size,
                             image_mean=[0.0] * 3, image_std=[1.0] * 3)  # the batch is normalised already
        global _TASK
        _TASK = InstanceTask(model=instantiate(cfg.model) if a.impl != "objmtl" else model)  # its size mapping
        opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=1e-4)
        step, t0 = 0, time.perf_counter()
        print(f"# {a.subset} {a.impl} {a.model if a.impl == 'objmtl' else 'maskrcnn_resnet50_fpn recipe, R18'} "
              f"{a.size}px steps={a.steps} lr={a.lr} {' '.join(a.overrides)}")
        while step < a.steps:
            for batch in dm.train_dataloader():
                model.train()
                losses = (model(batch["images"], batch["image_sizes"], InstanceTask._loss_targets(batch["targets"]))
                          if a.impl == "objmtl" else _tv_losses(model, batch))
                loss = sum(losses.values())
                opt.zero_grad()
                loss.backward()
                opt.step()
                step += 1
                if step % a.eval_every == 0 or step == a.steps:
                    segm, bbox = evaluate(model, dm, a.impl)
                    print(f"step {step:4d}  {time.perf_counter() - t0:7.1f} s  segm AP50 {segm:.3f}  "
                          f"bbox AP50 {bbox:.3f}  loss {float(loss):.3f}", flush=True)
                if step >= a.steps:
                    break


def _tv_losses(model: torch.nn.Module, batch: dict) -> dict:
    """torchvision's MaskRCNN in training: a list of unpadded images and 1-based labels."""
    images = [im[:, :h, :w] for im, (h, w) in zip(batch["images"], batch["image_sizes"].tolist(), strict=True)]
    targets = [{"boxes": t["boxes"], "labels": t["labels"] + 1, "masks": t["masks"]}
               for t in InstanceTask._loss_targets(batch["targets"])]
    return model(images, targets)


def _tv_preds(model: torch.nn.Module, batch: dict) -> tuple[list, list]:
    """torchvision's detections (masks pasted at its input size by its own transform) at the original sizes."""
    from torch.nn.functional import interpolate

    images = [im[:, :h, :w] for im, (h, w) in zip(batch["images"], batch["image_sizes"].tolist(), strict=True)]
    preds = []
    for det, target in zip(model(images), batch["targets"], strict=True):
        h, w = (int(v) for v in target["orig_size"])
        sy, sx = (float(v) for v in target["scale"])
        masks = interpolate(det["masks"], size=(h, w), mode="bilinear")[:, 0] > 0.5 if len(det["masks"]) else (
            torch.zeros((0, h, w), dtype=torch.bool))
        preds.append({"boxes": det["boxes"] * torch.tensor([1 / sx, 1 / sy, 1 / sx, 1 / sy]),
                      "scores": det["scores"], "labels": det["labels"] - 1, "masks": masks})
    return preds, _ObjmtlTargets.targets(batch)


class _ObjmtlTargets:
    @staticmethod
    def targets(batch: dict) -> list:
        """The ground truth at the original sizes, as objmtl's task builds it (the source outlines)."""
        dummy = [{"boxes": torch.zeros((0, 4)), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long),
                  "masks": torch.zeros((0, 1, 28, 28))} for _ in batch["targets"]]
        return _TASK._original_size(batch, dummy)[1]


@torch.no_grad()
def evaluate(model: torch.nn.Module, dm: object, impl: str) -> tuple[float, float]:
    from objmtl.metrics.instance import InstanceMetrics

    model.eval()
    metric = InstanceMetrics()
    for batch in dm.val_dataloader():
        if impl == "objmtl":
            preds, targets = _TASK._original_size(batch, model(batch["images"], batch["image_sizes"]))
        else:
            preds, targets = _tv_preds(model, batch)
        metric.update(preds, targets)
    res = metric.compute()
    return res["segm_map_50"], res["bbox_map_50"]


if __name__ == "__main__":
    main()
