"""``objmtl-export onnx`` end to end: export, verify on real images, draw, write a Triton repository."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch.nn.functional as F
from torch import from_numpy

from objmtl.errors import UserError
from objmtl.export.graphs import output_names
from objmtl.export.images import ImageSource
from objmtl.export.metadata import read_metadata
from objmtl.export.onnx_export import build_graph, export_onnx, load_for_export
from objmtl.export.preprocess import PAD_MULTIPLE, Preprocessor
from objmtl.export.results import draw_result, to_results
from objmtl.export.triton import write_triton_repository
from objmtl.export.verify import OrtRunner, verify

__all__ = ["DEFAULT_TOLERANCE", "run_export", "verification_batches"]

DEFAULT_TOLERANCE = 1e-3


def _images(image: str | Path | None, data_root: str | None, n: int) -> list[np.ndarray]:
    """``n`` images from ``--image`` (a file or folder) or else the run's evaluation shards."""
    source = image or data_root
    if image is not None and not Path(image).exists():
        raise UserError(f"--image {image}: no such file or folder")
    if source is None or not Path(source).exists():
        raise UserError("--verify/--show need images: give --image PATH (a file or a folder)"
                        + (f"; the run's data {data_root} is not here" if data_root else ""))
    images = [im for _, im in ImageSource(source, limit=n)]
    if not images:
        raise UserError(f"{source}: no images to verify with")
    while len(images) < n:  # a single --image file: repeat it (batch parity still tests the batch axis)
        images.append(images[len(images) % len(images)][:, ::-1].copy())
    return images


def verification_batches(prep: Preprocessor, images: Sequence[np.ndarray], *, dynamic: bool) -> list[np.ndarray]:
    """Batch 1, batch 3 and, for dynamic exports, batch 1 at another input size (3/4, multiple of 32)."""
    one = prep(images[:1]).batch
    batches = [one, prep(images[:3]).batch]
    if dynamic:
        def other_side(n: int) -> int:  # 3/4 of it on the 32 grid, or one step up when that collapses
            down = (n * 3 // 4) // PAD_MULTIPLE * PAD_MULTIPLE
            return down if PAD_MULTIPLE <= down < n else n + PAD_MULTIPLE

        size = (other_side(one.shape[2]), other_side(one.shape[3]))
        other = F.interpolate(from_numpy(one.astype(np.float32)), size=size, mode="bilinear", align_corners=False)
        batches.append(other.numpy().astype(one.dtype))
    return batches


def _show(path: Path, image: np.ndarray, result: dict[str, Any], meta: dict[str, Any]) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(draw_result(image, result, meta)).save(path)
    return path


def run_export(ckpt: str | Path, *, out: str | Path, shape: Sequence[int] | None = None, dynamic: bool = False,
               opset: int = 17, bake_norm: bool = False, uint8: bool = False, nms: str = "onnx",
               verify_images: bool = False, image: str | Path | None = None, tolerance: float = DEFAULT_TOLERANCE,
               show: str | Path | None = None, triton: str | Path | None = None, max_batch_size: int = 8,
               trust: bool = False) -> dict[str, Any]:
    """Exports ``ckpt`` to ``out`` and does the requested checks; returns what it measured.

    Raises:
        UserError: when ``verify_images`` finds an output differing by more than ``tolerance``.
    """
    exported = load_for_export(ckpt, trust=trust)
    path = export_onnx(exported, out=out, shape=shape, dynamic=dynamic, opset=opset, bake_norm=bake_norm,
                       uint8=uint8, nms=nms)
    print(f"exported: {path} (task={exported.task}, opset {opset}, input {'uint8' if uint8 else 'float32'} "
          f"{'[0, 255] pixels, normalised in the graph' if bake_norm else 'normalised'}, "
          f"{'dynamic batch/height/width' if dynamic else 'dynamic batch'})")
    report: dict[str, Any] = {"onnx": str(path)}
    meta = read_metadata(path)
    needs_images = verify_images or show
    if show:
        exported.kind.check_show()
    if needs_images:
        data_root = exported.config.get("data", {}).get("root") if isinstance(exported.config.get("data"), dict) else None
        images = _images(image, data_root, 3)
        # a multi-head kind: the whole-image heads' input through one of their eval pipelines
        prep = exported.kind.verify_preprocessor(exported, baked=bake_norm, uint8=uint8, mean=exported.mean,
                                                 fixed_size=None if dynamic else meta["input_size"])
    if verify_images:
        graph = build_graph(exported, bake_norm=bake_norm, nms=nms)
        names = output_names(graph)
        detections = exported.kind.detection_outputs(exported, graph, names=names, nms=nms)
        batches: list[Any] = verification_batches(prep, images, dynamic=dynamic)
        batches = exported.kind.verification_inputs(exported, images=images, batches=batches)
        results = verify(graph=graph, onnx_path=path, batches=batches, names=names, detections=detections)
        worst: dict[str, float] = {}
        for shape_, parity in results:
            diffs = ", ".join(f"{k} {v:.2e}" for k, v in parity.diffs.items())
            print(f"verify {list(shape_)}: max abs diff {diffs}" + ("" if not parity.problems else
                                                                    f"; {'; '.join(parity.problems)}"))
            for k, v in parity.diffs.items():
                worst[k] = max(worst.get(k, 0.0), v)
        report["verify"] = worst
        failed = [p for _, p in results if not p.ok(tolerance)]
        if failed:
            raise UserError(f"{path}: onnxruntime differs from PyTorch beyond {tolerance:g} "
                            f"({'; '.join(failed[0].problems) or worst})")
        print(f"verify: onnxruntime equals PyTorch within {tolerance:g} on {len(results)} batches")
    if show:
        prepared = prep(images[:1])
        result = to_results(OrtRunner(path)(prepared.batch), meta=meta, prepared=prepared)[0]
        report["show"] = str(_show(Path(show), images[0], result, meta))
        print(f"shown:   {report['show']}")
    if triton:
        config = write_triton_repository(path, triton, max_batch_size=max_batch_size)
        report["triton"] = str(config)
        print(f"triton:  {config}")
    if (source := _data_source(exported.config)) is not None:
        print(f"next:    objmtl-predict {path} {source} --limit 16 --out {path.parent / 'predict'}")
    return report


def _data_source(config: dict[str, Any]) -> Path | None:
    """The shard set the model was trained on, when it is still there (for the printed predict command)."""
    from objmtl.data.datamodule import resolve_root

    data = config.get("data")
    if not isinstance(data, dict) or data.get("sources"):
        return None
    try:
        root = resolve_root(data.get("root"), data.get("synth")).resolve()
    except UserError:
        return None
    return root if (root / "meta.json").is_file() else None
