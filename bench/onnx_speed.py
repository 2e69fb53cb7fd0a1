"""ONNX Runtime against eager PyTorch: latency of objmtl's exported graphs on CPU.

    python bench/onnx_speed.py     # cls R18/R50 224, ATSS R18/R50 512, semantic FPN R18 512, SimpleBaseline R50 256x192
    python bench/onnx_speed.py --repeats 5 --threads 2 --batches 1 8

Each case builds the model (random init; 1000 classes for cls, 80 for det, 21 for seg, 17 keypoints),
wraps it in the
graph ``objmtl-export`` traces (:mod:`objmtl.export.graphs`: detection with its post-processing and
NMS in the graph), exports it with dynamic batch and times, per batch size, the same input through

- eager PyTorch: ``torch.no_grad()``, the graph module in eval mode, ``torch.set_num_threads(--threads)``;
- onnxruntime: CPUExecutionProvider, ``intra_op_num_threads=--threads``, default graph optimisations.

After one untimed call each, the two sides alternate for ``--repeats`` rounds; the table gives the
median milliseconds and eager / ORT (above 1: ORT faster). Random detectors score every anchor near
their prior (0.01), below the 0.05 threshold, so NMS sees few boxes: the detection times are those of
backbone, head and decoding, as the eager side's are. Prints a markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from objmtl.export.graphs import (
    ClassifierGraph,
    DetectorGraph,
    Normalize,
    PoseGraph,
    SegmenterGraph,
    output_names,
)
from objmtl.export.verify import OrtRunner
from objmtl.models import Classifier, build_backbone
from objmtl.models.detection import ATSS
from objmtl.models.pose import SimpleBaseline
from objmtl.models.segmentation import SemanticFPN


def build(case: str) -> tuple[torch.nn.Module, tuple[int, int]]:
    kind, arch = case.split("-")
    if kind == "cls":
        model = Classifier(backbone=build_backbone(name=arch, out_indices=[3]), num_classes=1000)
        return ClassifierGraph(model=model.eval(), normalize=Normalize()).eval(), (224, 224)
    if kind == "seg":
        model = SemanticFPN(backbone=build_backbone(name=arch, out_indices=[0, 1, 2, 3]), num_classes=21)
        return SegmenterGraph(model=model.eval(), normalize=Normalize()).eval(), (512, 512)
    if kind == "pose":
        model = SimpleBaseline(backbone=build_backbone(name=arch, out_indices=[3]), num_keypoints=17)
        return PoseGraph(model=model.eval(), normalize=Normalize()).eval(), (256, 192)
    model = ATSS(backbone=build_backbone(name=arch, out_indices=[1, 2, 3]), num_classes=80)
    return DetectorGraph(model=model.eval(), normalize=Normalize(), nms="onnx").eval(), (512, 512)


def export(graph: torch.nn.Module, size: tuple[int, int], path: Path) -> None:
    names = output_names(graph)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, (torch.rand(2, 3, *size),), str(path), dynamo=False, opset_version=17,
                          input_names=["INPUT__0"], output_names=names,
                          dynamic_axes={"INPUT__0": {0: "batch"}, **{n: {0: "batch"} for n in names}})


def time_case(case: str, batches: list[int], repeats: int, threads: int, tmp: Path) -> list[dict]:
    graph, size = build(case)
    path = tmp / f"{case}.onnx"
    export(graph, size, path)
    ort = OrtRunner(path, threads=threads)
    rows = []
    for batch in batches:
        x = torch.rand(batch, 3, *size)
        arr = x.numpy()
        with torch.no_grad():
            graph(x)
        ort(arr)
        eager, onnx_ms = [], []
        for _ in range(repeats):
            t = time.perf_counter()
            with torch.no_grad():
                graph(x)
            eager.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            ort(arr)
            onnx_ms.append((time.perf_counter() - t) * 1000)
        e, o = statistics.median(eager), statistics.median(onnx_ms)
        rows.append({"case": case, "size": "x".join(map(str, size)), "batch": batch, "eager": e, "ort": o, "ratio": e / o})
        print(f"{case} batch {batch}: eager {e:.1f} ms, ORT {o:.1f} ms, {e / o:.2f}x", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", default=["cls-resnet18", "cls-resnet50", "det-resnet18", "det-resnet50",
                                                  "seg-resnet18", "pose-resnet50"])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    np.random.seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases:
            rows += time_case(case, args.batches, args.repeats, args.threads, Path(tmp))
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{args.threads} threads, median of {args.repeats}\n")
    print("| model | input | batch | eager (ms) | ORT (ms) | eager / ORT |\n|---|---|---|---|---|---|")
    for r in rows:
        label = {"cls": "classifier", "det": "ATSS (NMS in graph)", "seg": "semantic FPN",
                 "pose": "SimpleBaseline"}[r["case"].split("-")[0]]
        print(f"| {label} {r['case'].split('-')[1]} | {r['size']} | {r['batch']} | {r['eager']:.1f} | "
              f"{r['ort']:.1f} | {r['ratio']:.2f}x |")


if __name__ == "__main__":
    main()
