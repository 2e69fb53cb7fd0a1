"""Multi-scale deformable attention: objmtl's compiled kernel beside the pure-PyTorch (grid_sample) reference.

    python bench/ms_deform_attn_speed.py                 # ~1 min on 2 idle cores (after the one-time build)
    python bench/ms_deform_attn_speed.py --repeats 20 --threads 2

Deformable DETR's sizes: batch N=2, M=8 heads of D=32 channels (d_model 256), L=4 levels of 64x64, 32x32,
16x16 and 8x8 (S = 5440), P=4 points, float32, and Lq = 300 and 1000 queries (the decoder's range) and
Lq = S (the encoder: every position of every level queries). Inputs are shaped like the model's: each query
has a reference point (uniform in [0, 1] for the decoder, the centre of its own pixel for the encoder) and
its sampling points lie about 2 pixels of their level around it (Gaussian offsets; a few fall off the maps);
attention weights are a softmax over the L*P points of each head.

Per implementation, after ``--warmup`` untimed repeats, the median over ``--repeats`` of

(a) forward: ``torch.no_grad()``, the op alone;
(b) forward + backward: inputs that need gradients, ``out.backward(grad)``.

"C++ kernel" is ``objmtl.ops.ms_deform_attn`` (checks + autograd Function + kernel, what a model calls); the
reference is ``ms_deform_attn_reference``. Each repeat runs both, in turn, order swapped every repeat, so both
see the same machine state. ``torch.set_num_threads(--threads)``. With a GPU, the same table follows for the
CUDA kernel (float32, synchronised). Prints markdown tables with ratios (kernel / reference), to paste into
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor

from objmtl.ops import build, ms_deform_attn, ms_deform_attn_reference

LEVELS = ((64, 64), (32, 32), (16, 16), (8, 8))


def deformable_detr_inputs(queries: int | None, *, batch: int = 2, heads: int = 8, channels: int = 32,
                           points: int = 4, offset_pixels: float = 2.0, seed: int = 0,
                           device: str = "cpu") -> dict[str, Tensor]:
    """The op's inputs at Deformable DETR's sizes; ``queries=None`` means Lq = S (the encoder).

    Returns:
        ``value`` [N, S, M, D], ``spatial_shapes`` [L, 2], ``level_start_index`` [L],
        ``sampling_locations`` [N, Lq, M, L, P, 2], ``attention_weights`` [N, Lq, M, L, P].
    """
    g = torch.Generator().manual_seed(seed)
    shapes = torch.tensor(LEVELS)
    areas = shapes[:, 0] * shapes[:, 1]
    s, levels = int(areas.sum()), len(LEVELS)
    if queries is None:  # every pixel of every level, at its centre
        centres = []
        for h, w in LEVELS:
            ys, xs = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")
            centres.append(torch.stack([xs, ys], -1).reshape(-1, 2))
        reference = torch.cat(centres)[None].expand(batch, s, 2)  # [N, S, 2]
    else:
        reference = torch.rand(batch, queries, 2, generator=g)  # [N, Lq, 2]
    lq = reference.shape[1]
    level_size = shapes.flip(-1).float()  # [L, 2] (W, H)
    offsets = torch.randn(batch, lq, heads, levels, points, 2, generator=g) * offset_pixels / level_size[:, None]
    logits = torch.randn(batch, lq, heads, levels * points, generator=g)
    inputs = {"value": torch.randn(batch, s, heads, channels, generator=g),
              "spatial_shapes": shapes,
              "level_start_index": torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]]),
              "sampling_locations": reference[:, :, None, None, None, :] + offsets,
              "attention_weights": logits.softmax(-1).view(batch, lq, heads, levels, points)}
    return {k: v.to(device) for k, v in inputs.items()}


class Timed:
    """One implementation: its forward and forward+backward times on shared inputs."""

    def __init__(self, name: str, fn: Callable[[dict[str, Tensor]], Tensor], inputs: dict[str, Tensor]) -> None:
        self.name, self.fn, self.inputs = name, fn, inputs
        self.sync = torch.cuda.synchronize if inputs["value"].is_cuda else (lambda: None)
        self.forward_times: list[float] = []
        self.train_times: list[float] = []
        out_shape = (*inputs["sampling_locations"].shape[:2], inputs["value"].shape[2] * inputs["value"].shape[3])
        self.grad = torch.randn(out_shape, generator=torch.Generator().manual_seed(1)).to(inputs["value"].device)

    def forward(self) -> float:
        self.sync()
        t = time.perf_counter()
        with torch.no_grad():
            self.fn(self.inputs)
        self.sync()
        return time.perf_counter() - t

    def forward_backward(self) -> float:
        leaves = {k: v.detach().requires_grad_() if v.is_floating_point() else v for k, v in self.inputs.items()}
        self.sync()
        t = time.perf_counter()
        self.fn(leaves).backward(self.grad)
        self.sync()
        return time.perf_counter() - t


def kernel(x: dict[str, Tensor]) -> Tensor:
    return ms_deform_attn(x["value"], x["spatial_shapes"], x["level_start_index"], x["sampling_locations"],
                          x["attention_weights"])


def reference(x: dict[str, Tensor]) -> Tensor:
    return ms_deform_attn_reference(x["value"], x["spatial_shapes"], x["sampling_locations"], x["attention_weights"])


def compare(device: str, query_counts: list[int | None], warmup: int, repeats: int) -> list[tuple[str, ...]]:
    """Rows (Lq, fwd kernel, fwd ref, ratio, fwd+bwd kernel, fwd+bwd ref, ratio), times in ms."""
    rows = []
    for queries in query_counts:
        inputs = deformable_detr_inputs(queries, device=device)
        pair = [Timed("kernel", kernel, inputs), Timed("reference", reference, inputs)]
        diff = float((kernel(inputs) - reference(inputs)).abs().max())
        if diff > 1e-4:
            raise RuntimeError(f"{device}: kernel and reference differ by {diff:.3g}")
        for repeat in range(warmup + repeats):
            for t in pair if repeat % 2 == 0 else pair[::-1]:
                forward, train = t.forward(), t.forward_backward()
                if repeat >= warmup:
                    t.forward_times.append(forward)
                    t.train_times.append(train)
        k, r = pair
        kf, rf = statistics.median(k.forward_times) * 1e3, statistics.median(r.forward_times) * 1e3
        kt, rt = statistics.median(k.train_times) * 1e3, statistics.median(r.train_times) * 1e3
        lq = inputs["sampling_locations"].shape[1]
        label = f"{lq} (= S)" if queries is None else str(lq)
        rows.append((label, f"{kf:.1f}", f"{rf:.1f}", f"{kf / rf:.2f}x", f"{kt:.1f}", f"{rt:.1f}", f"{kt / rt:.2f}x"))
        print(f"{device} Lq={label}: forward {kf:.1f} / {rf:.1f} ms, forward+backward {kt:.1f} / {rt:.1f} ms",
              flush=True)
    return rows


def print_table(title: str, rows: list[tuple[str, ...]]) -> None:
    print(f"\n{title}\n\n| Lq | forward, kernel (ms) | forward, reference (ms) | ratio | fwd+bwd, kernel (ms) | "
          "fwd+bwd, reference (ms) | ratio |\n|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=10, help="timed repeats per implementation (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed repeats first")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--queries", default="300,1000,S", help="comma-separated Lq values; S = every position")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    query_counts = [None if q.strip().upper() == "S" else int(q) for q in args.queries.split(",")]
    start = time.perf_counter()
    module, why = build.get_extension("cpu")
    if module is None:
        raise SystemExit(f"error: the C++ kernel is unavailable: {why}")
    print(f"extension ready in {time.perf_counter() - start:.1f} s (built once, then cached)", flush=True)
    cpu_rows = compare("cpu", query_counts, args.warmup, args.repeats)
    cuda_rows = None
    if torch.cuda.is_available():
        if build.get_extension("cuda")[0] is None:
            print(f"\nno CUDA section: {build.get_extension('cuda')[1]}")
        else:
            cuda_rows = compare("cuda", query_counts, args.warmup, args.repeats)

    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, Python "
          f"{platform.python_version()}; {args.threads} threads; N=2, M=8, D=32, levels {LEVELS}, P=4, float32; "
          f"median of {args.repeats} after {args.warmup} warm-up, kernel and reference alternated")
    print_table("CPU: C++ kernel vs reference", cpu_rows)
    if cuda_rows is not None:
        print_table(f"CUDA ({torch.cuda.get_device_name(0)}): CUDA kernel vs reference", cuda_rows)
    goal = [r for r in cpu_rows if r[0] == "1000"]
    if goal:
        ratio = float(goal[0][6].rstrip("x"))
        print(f"\ngoal C++ fwd+bwd / reference fwd+bwd at Lq=1000 <= 0.5x: {ratio:.2f}x -> "
              f"{'met' if ratio <= 0.5 else 'not met'}")


if __name__ == "__main__":
    main()
