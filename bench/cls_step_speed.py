"""One classifier training step on the CPU, median of 10 after 2 warm-up steps.

    python bench/cls_step_speed.py mkldnn resnet18 64 [cl] [bf16]

Arguments: ``mkldnn`` or ``nomkldnn`` (oneDNN convolutions on or off), a torchvision model name, the image
side, then any of ``cl`` (channels_last), ``fused`` (AdamW's fused kernel) and ``bf16`` (forward under CPU autocast to bfloat16, as
``trainer.precision=bf16-mixed`` does). Batch 32, 4 classes, AdamW, 2 intra-op threads.
"""

from __future__ import annotations

import sys
import time

import torch
import torchvision


def main() -> None:
    torch.set_num_threads(2)
    if sys.argv[1] == "nomkldnn":
        torch.backends.mkldnn.enabled = False
    name, size = sys.argv[2], int(sys.argv[3])
    model = getattr(torchvision.models, name)(num_classes=4)
    opt = torch.optim.AdamW(model.parameters(), 1e-3, fused="fused" in sys.argv[4:] or None)
    x, y = torch.randn(32, 3, size, size), torch.randint(0, 4, (32,))
    flags = sys.argv[4:]
    if "cl" in flags:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    times = []
    for _ in range(12):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled="bf16" in flags):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    times = sorted(times[2:])
    print(sys.argv[1:], f"median {times[len(times) // 2] * 1000:.0f} ms/step")


if __name__ == "__main__":
    main()
