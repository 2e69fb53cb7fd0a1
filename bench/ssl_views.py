"""Which augmentation lets MoBY learn on the synthetic set: the loss with one view augmentation at a time.

    python bench/ssl_views.py                    # ~2 min on 2 cores (6 view recipes x 76 steps)
    python bench/ssl_views.py --steps 150 --recipes color gray

MoBY (resnet18, projector / predictor 512 -> 128, queue 256, AdamW lr 0.002, teacher momentum 0.99) on 420
synthetic 32-px images (``render_sample(i, seed=1)``), batch 64, each recipe from the same initial weights.
Both views go through the same recipe, then ``Normalize``. A recipe that leaves an easy cue telling the
images apart lets the InfoNCE loss (two directions, ~2 ln(257) = 11.1 at chance) fall fast; one that takes
that cue away keeps it high. Prints the loss every 25 steps and a markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import copy
import time

import albumentations as A
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2

from objmtl.data.synth import render_sample
from objmtl.models import build_backbone
from objmtl.models.ssl import MoBY

SIZE = 32
RECIPES = {
    "none": [],
    "crop": [A.RandomResizedCrop(size=(SIZE, SIZE), scale=(0.5, 1.0))],
    "flip": [A.HorizontalFlip(), A.VerticalFlip()],
    "blur": [A.GaussianBlur(sigma_limit=(0.1, 1.0), p=0.5)],
    "color": [A.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.8, hue=0.5, p=0.8)],
    "gray": [A.RandomResizedCrop(size=(SIZE, SIZE), scale=(0.5, 1.0)), A.HorizontalFlip(), A.VerticalFlip(),
             A.ToGray(p=1.0), A.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.0, hue=0.0, p=0.8)],
}


def run(model: MoBY, images: np.ndarray, recipe: list, steps: int, seed: int) -> list[tuple[int, float]]:
    """Trains ``model`` for ``steps`` on two views of random batches; returns (step, loss) every 25 steps."""
    pipe = A.Compose([*recipe, A.Normalize(), ToTensorV2()], seed=seed)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.002, weight_decay=0.05)
    rng = np.random.default_rng(seed)
    out = []
    for step in range(steps):
        idx = rng.choice(len(images), 64, replace=False)
        v1, v2 = (torch.stack([pipe(image=images[i])["image"] for i in idx]).float() for _ in range(2))
        loss = model.loss(v1, v2, momentum=0.99)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 25 == 0 or step == steps - 1:
            out.append((step, loss.item()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=76)
    parser.add_argument("--recipes", nargs="+", default=["none", "crop", "flip", "blur", "color", "gray"],
                        choices=list(RECIPES))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images = np.stack([render_sample(i, seed=1, image_size=SIZE)[0] for i in range(420)])
    torch.manual_seed(0)
    init = MoBY(backbone=build_backbone(name="resnet18", out_indices=[3], weights=None), proj_dim=128,
                hidden_dim=512, queue_size=256)
    rows = []
    for name in args.recipes:
        start = time.perf_counter()
        curve = run(copy.deepcopy(init), images, RECIPES[name], args.steps, seed=0)
        print(f"{name}: " + " ".join(f"{s}:{v:.2f}" for s, v in curve) + f"  ({time.perf_counter() - start:.0f} s)",
              flush=True)
        rows.append((name, curve))
    print(f"\n| views | {' | '.join(f'step {s}' for s, _ in rows[0][1])} |")
    print(f"|---|{'---:|' * len(rows[0][1])}")
    for name, curve in rows:
        print(f"| {name} | {' | '.join(f'{v:.2f}' for _, v in curve)} |")


if __name__ == "__main__":
    main()
