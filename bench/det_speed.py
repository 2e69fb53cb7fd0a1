"""Dense detectors: training-step and inference time of objmtl's ATSS beside torchvision's FCOS.

    python bench/det_speed.py                      # ~1 min on 2 idle cores (--steps 5)
    python bench/det_speed.py --steps 10 --threads 2 --size 512 --batch 2

Models, all random init, ``num_classes=80``, trainable end to end with ordinary (not frozen) BatchNorm:

- objmtl ``ATSS`` on ``build_backbone(name="resnet50" / "resnet18", out_indices=[1, 2, 3])`` (C3-C5, FPN
  P3-P7, 256 channels, 4-conv GroupNorm towers: ``conf/model/atss.yaml``'s settings);
- torchvision ``fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=80, min_size=size,
  max_size=size)``: with no weights torchvision makes all 5 backbone stages trainable and uses
  ``nn.BatchNorm2d``, the same backbone settings as ATSS's ``frozen_stages=-1, norm_eval=False``. Its
  ``GeneralizedRCNNTransform`` normalises and resizes inside the model: the images are fed at ``size`` x
  ``size`` so the resize is a scale-1.0 interpolation (the size stays the same), and that transform's cost is
  part of FCOS's times (printed on its own below the table). ATSS takes the tensor as is (objmtl normalises
  in the data pipeline).

One synthetic batch (``--batch`` images 3 x size x size, ~5 random boxes each, seed 0) shared by every
model; ``torch.set_num_threads(--threads)``; AdamW (lr 1e-4). Per model, after ``--warmup`` untimed
repeats, the median over ``--steps`` repeats of

(a) a training step: ``zero_grad`` + forward + loss + backward + optimizer step, model in train mode;
(b) inference: eval mode, ``torch.no_grad()``, forward + post-processing (ATSS ``postprocess``; FCOS's
    own, inside its forward).

Each repeat runs every model once (training, then inference), round robin, with the order rotated every
repeat, so all see the same machine state. Prints a markdown table (seconds and ratios vs torchvision FCOS
R50) and the machine line, to paste into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torchvision
from torch import Tensor, nn


def synthetic_batch(batch: int, size: int, boxes_per_image: int, num_classes: int,
                    seed: int = 0) -> tuple[Tensor, list[dict[str, Tensor]]]:
    """``batch`` random images [B, 3, size, size] in [0, 1] and targets with xyxy boxes 32-256 px wide."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, size, size, generator=g)
    targets = []
    for _ in range(batch):
        wh = torch.randint(32, min(256, size // 2) + 1, (boxes_per_image, 2), generator=g).float()  # [G, 2]
        x0 = torch.rand(boxes_per_image, generator=g) * (size - wh[:, 0])
        y0 = torch.rand(boxes_per_image, generator=g) * (size - wh[:, 1])
        boxes = torch.stack([x0, y0, x0 + wh[:, 0], y0 + wh[:, 1]], dim=1)  # [G, 4]
        targets.append({"boxes": boxes, "labels": torch.randint(0, num_classes, (boxes_per_image,), generator=g),
                        "iscrowd": torch.zeros(boxes_per_image, dtype=torch.bool)})
    return images, targets


class Runner:
    """One model with its training step and inference call on the shared batch."""

    def __init__(self, name: str, model: nn.Module, train: Callable[[], Tensor],
                 infer: Callable[[], object]) -> None:
        self.name, self.model = name, model
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        self._train, self._infer = train, infer
        self.train_times: list[float] = []
        self.infer_times: list[float] = []

    def train_step(self) -> float:
        self.model.train()
        t = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._train()
        loss.backward()
        self.optimizer.step()
        elapsed = time.perf_counter() - t
        if not torch.isfinite(loss.detach()):
            raise RuntimeError(f"{self.name}: non-finite loss {float(loss)}")
        return elapsed

    def inference(self) -> float:
        self.model.eval()
        t = time.perf_counter()
        with torch.no_grad():
            self._infer()
        return time.perf_counter() - t


def atss_runner(name: str, backbone: str, images: Tensor, targets: list[dict[str, Tensor]],
                num_classes: int) -> Runner:
    from objmtl.models import build_backbone
    from objmtl.models.detection import ATSS

    torch.manual_seed(0)
    model = ATSS(backbone=build_backbone(name=backbone, out_indices=[1, 2, 3]), num_classes=num_classes,
                 fpn_channels=256, num_convs=4)
    sizes = torch.tensor([list(images.shape[-2:])] * images.shape[0])

    def train() -> Tensor:
        return model.loss(model(images), targets)["loss"]

    def infer() -> object:
        return model.postprocess(model(images), sizes)

    return Runner(name, model, train, infer)


def fcos_runner(images: Tensor, targets: list[dict[str, Tensor]], num_classes: int, size: int) -> Runner:
    torch.manual_seed(0)
    model = torchvision.models.detection.fcos_resnet50_fpn(weights=None, weights_backbone=None,
                                                           num_classes=num_classes, min_size=size, max_size=size)
    image_list = list(images)
    tv_targets = [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets]

    def train() -> Tensor:
        losses = model(image_list, tv_targets)
        return sum(losses.values())

    def infer() -> object:
        return model(image_list)

    return Runner("torchvision FCOS R50-FPN", model, train, infer)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=5, help="timed repeats per model (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed repeats first")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--boxes", type=int, default=5, help="boxes per image")
    p.add_argument("--num-classes", type=int, default=80)
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    images, targets = synthetic_batch(args.batch, args.size, args.boxes, args.num_classes)
    runners = [fcos_runner(images, targets, args.num_classes, args.size),
               atss_runner("objmtl ATSS R50-FPN", "resnet50", images, targets, args.num_classes),
               atss_runner("objmtl ATSS R18-FPN", "resnet18", images, targets, args.num_classes)]
    fcos = runners[0].model
    transform_times: list[float] = []
    start = time.perf_counter()
    for repeat in range(args.warmup + args.steps):
        k = repeat % len(runners)
        order = runners[k:] + runners[:k]  # rotate who goes first
        timed = repeat >= args.warmup
        for r in order:
            t = r.train_step()
            if timed:
                r.train_times.append(t)
        for r in order:
            t = r.inference()
            if timed:
                r.infer_times.append(t)
        with torch.no_grad():  # FCOS's normalise + (scale 1.0) resize + batching alone, eval mode
            t0 = time.perf_counter()
            fcos.transform(list(images))
            if timed:
                transform_times.append(time.perf_counter() - t0)
        last = "; ".join(f"{r.name.split()[-2]} {r.name.split()[-1][:3]} train {r.train_times[-1]:.2f}s "
                         f"infer {r.infer_times[-1]:.2f}s" for r in runners) if timed else "warm-up"
        print(f"repeat {repeat + 1}/{args.warmup + args.steps} ({time.perf_counter() - start:.0f} s): {last}",
              flush=True)

    med = {r.name: (statistics.median(r.train_times), statistics.median(r.infer_times)) for r in runners}
    base_train, base_infer = med[runners[0].name]
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, torchvision "
          f"{torchvision.__version__}, Python {platform.python_version()}; {args.threads} threads, "
          f"{args.batch} x 3 x {args.size} x {args.size}, {args.boxes} boxes/image, {args.num_classes} classes, "
          f"median of {args.steps} after {args.warmup} warm-up")
    print("\n| model | params (M) | train step (s) | vs FCOS R50 | inference (s) | vs FCOS R50 |\n"
          "|---|---:|---:|---:|---:|---:|")
    for r in runners:
        tr, inf = med[r.name]
        params = sum(p.numel() for p in r.model.parameters()) / 1e6
        print(f"| {r.name} | {params:.1f} | {tr:.2f} | {tr / base_train:.2f}x | {inf:.2f} | "
              f"{inf / base_infer:.2f}x |")
    atss50 = med["objmtl ATSS R50-FPN"][0] / base_train
    print(f"\nFCOS's GeneralizedRCNNTransform alone (normalise + scale-1.0 resize + batch): "
          f"{statistics.median(transform_times) * 1000:.0f} ms per batch (inside its times above)")
    print(f"goal ATSS R50 step / FCOS R50 step <= 1.0x: {atss50:.2f}x -> {'met' if atss50 <= 1.0 else 'not met'}")


if __name__ == "__main__":
    main()
