"""Mask R-CNN-R50: objmtl's model=mask_rcnn beside torchvision's maskrcnn_resnet50_fpn(weights=None), same size.

Both are built from the same torchvision parts and run the same kernels, so their train step and inference
should take the same time (a gap over ~5 % is a bug to find). The two run interleaved in one process, on the same
random batch (``--batch`` images of ``--size`` px with ``--objects`` random boxes and masks each), after warm-up;
each line gives the median over ``--repeat`` rounds and objmtl / torchvision. torchvision's model gets its
GeneralizedRCNNTransform with min_size = max_size = size, mean 0 and std 1, so it neither resizes nor renormalises.

    python bench/inst_speed.py --size 512 --batch 2 --repeat 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers import compose_train  # noqa: E402


def _targets(n: int, size: int, objects: int, classes: int, gen: torch.Generator) -> list[dict[str, torch.Tensor]]:
    out = []
    for _ in range(n):
        xy = torch.rand(objects, 2, generator=gen) * size * 0.6
        wh = 16 + torch.rand(objects, 2, generator=gen) * size * 0.35
        boxes = torch.cat([xy, (xy + wh).clamp(max=size)], 1)
        masks = torch.zeros(objects, size, size, dtype=torch.uint8)
        for m, (x1, y1, x2, y2) in zip(masks, boxes.round().long().tolist(), strict=True):
            m[y1:y2, x1:x2] = 1
        out.append({"boxes": boxes, "labels": torch.randint(0, classes, (objects,), generator=gen), "masks": masks})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--objects", type=int, default=6)
    ap.add_argument("--classes", type=int, default=80)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    from hydra.utils import instantiate
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    cfg = compose_train("task=inst", "model=mask_rcnn", "data.synth.n=60", run_dir=Path("/tmp/objmtl-inst-speed"))
    cfg.model.num_classes = a.classes
    torch.manual_seed(0)
    ours = instantiate(cfg.model)
    theirs = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=a.classes + 1,
                                   min_size=a.size, max_size=a.size, image_mean=[0.0] * 3, image_std=[1.0] * 3)
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(a.batch, 3, a.size, a.size, generator=gen)
    sizes = torch.tensor([[a.size, a.size]] * a.batch)
    targets = _targets(a.batch, a.size, a.objects, a.classes, gen)
    their_targets = [{**t, "labels": t["labels"] + 1} for t in targets]
    opt_ours = torch.optim.SGD(ours.parameters(), lr=1e-4)
    opt_theirs = torch.optim.SGD(theirs.parameters(), lr=1e-4)

    def train_ours() -> None:
        ours.train()
        loss = sum(ours(images, sizes, targets).values())
        opt_ours.zero_grad()
        loss.backward()
        opt_ours.step()

    def train_theirs() -> None:
        theirs.train()
        loss = sum(theirs(list(images), their_targets).values())
        opt_theirs.zero_grad()
        loss.backward()
        opt_theirs.step()

    @torch.no_grad()
    def infer_ours() -> None:
        ours.eval()
        ours(images, sizes)

    @torch.no_grad()
    def infer_theirs() -> None:
        theirs.eval()
        theirs(list(images))

    print(f"Mask R-CNN-R50, {a.batch} x {a.size} px, {a.objects} objects per image, {torch.get_num_threads()} threads")
    for name, mine, other in (("train step", train_ours, train_theirs), ("inference", infer_ours, infer_theirs)):
        mine(), other()  # warm-up
        times: dict[str, list[float]] = {"objmtl": [], "torchvision": []}
        for _ in range(a.repeat):
            for key, fn in (("objmtl", mine), ("torchvision", other)):
                t = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - t)
        m_ours, m_theirs = statistics.median(times["objmtl"]), statistics.median(times["torchvision"])
        print(f"{name:10s}  objmtl {m_ours:7.3f} s  torchvision {m_theirs:7.3f} s  ratio {m_ours / m_theirs:.3f}",
              flush=True)


if __name__ == "__main__":
    main()
