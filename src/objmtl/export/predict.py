"""``objmtl-predict MODEL INPUT``: a checkpoint (PyTorch) or an ``.onnx`` file (onnxruntime) on images.

Both backends run the same graph (:mod:`objmtl.export.graphs`), fed by the same
:class:`~objmtl.export.preprocess.Preprocessor` and decoded by the same
:func:`~objmtl.export.results.to_results`; only the call in between differs. Writes
``OUT/predictions.json`` (one entry per image), for segmentation ``OUT/masks/NAME.png`` (class
indices), for pose the keypoints of the whole image taken as one person, for classification also
``OUT/predictions.txt``
(``name  class  score`` per line, ObjectiveMTL's ``cls_infer_to_txt``), and a picture per image
in ``OUT/pictures/``. A multi-task model gives each image's entry one key per head and draws into
``OUT/pictures/HEAD/`` (:mod:`objmtl.export.mtl_predict`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from objmtl.errors import UserError
from objmtl.export.export_kind import meta_kind
from objmtl.export.images import ImageSource

__all__ = ["load_backend", "predict"]

Backend = Callable[[np.ndarray], list[np.ndarray]]


def load_backend(model: str | Path, *, trust: bool = False) -> tuple[Backend, dict[str, Any]]:
    """``(run batch -> outputs, metadata)`` of an ``.onnx`` file or a checkpoint / run directory."""
    model = Path(model)
    if model.suffix.lower() == ".onnx":
        from objmtl.export.metadata import read_metadata
        from objmtl.export.verify import OrtRunner

        meta = read_metadata(model)
        runner = OrtRunner(model)
        expected = "INPUT__0"
        if runner.input != expected:
            raise UserError(f"{model}: its input is named {runner.input!r}, not {expected!r}: not an objmtl export")
        return runner, meta
    from objmtl.checkpoint import find_checkpoint
    from objmtl.export.onnx_export import build_graph, load_for_export, metadata_of
    from objmtl.export.verify import torch_outputs

    exported = load_for_export(find_checkpoint(model), trust=trust)
    graph = build_graph(exported)
    meta = metadata_of(exported, shape=exported.image_size, bake_norm=False, uint8=False, nms="onnx")
    return (lambda batch: torch_outputs(graph, batch)), meta


def _batches(items: Iterator[tuple[str, np.ndarray]], size: int) -> Iterator[list[tuple[str, np.ndarray]]]:
    while chunk := list(islice(items, size)):
        yield chunk


def predict(model: str | Path, source: str | Path, *, out: str | Path, batch_size: int = 8, score_thr: float = 0.3,
            top_k: int = 5, draw: bool = True, split: str | None = None, limit: int | None = None,
            trust: bool = False) -> list[dict[str, Any]]:
    """Runs ``model`` on every image of ``source`` and writes the outputs to ``out``; returns the results."""
    from PIL import Image

    run, meta = load_backend(model, trust=trust)
    kind = meta_kind(meta)  # the file's task kind: its preprocessing, decoding and pictures
    predictor = kind.predictor(run=run, meta=meta)
    out = Path(out)
    pictures = out / "pictures"
    if draw:
        pictures.mkdir(parents=True, exist_ok=True)
    images = ImageSource(source, split=split, limit=limit, exclude=(out,))
    rows: list[dict[str, Any]] = []
    with tqdm(desc="predict", unit="img") as bar:
        for chunk in _batches(iter(images), batch_size):
            names: Sequence[str] = [n for n, _ in chunk]
            results = predictor([im for _, im in chunk], top_k=top_k, score_thr=score_thr)
            for name, (_, image), result in zip(names, chunk, results, strict=True):
                # a multi-head kind: per image {head: result}, each drawn under pictures/HEAD/
                for head, part, part_meta, part_kind in kind.parts(result, meta):
                    if draw:
                        target = pictures / head / f"{name}.png"
                        target.parent.mkdir(parents=True, exist_ok=True)
                        Image.fromarray(part_kind.draw(image, part, part_meta)).save(target)
                    if "mask" in part:  # seg: a class-index PNG per image (values index the class names)
                        target = out / "masks" / f"{name}.png"
                        target.parent.mkdir(parents=True, exist_ok=True)
                        Image.fromarray(part.pop("mask")).save(target)
                rows.append({"image": name, **result})
            bar.update(len(chunk))
    out.mkdir(parents=True, exist_ok=True)
    (out / "predictions.json").write_text(json.dumps(rows, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    if (lines := kind.text_lines(rows, meta)) is not None:  # cls: name, class, score per line
        (out / "predictions.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for skipped in images.skipped:
        print(f"skipped: {skipped}: not a readable image")
    print(f"predicted {len(rows)} images ({len(images.skipped)} skipped) -> {out / 'predictions.json'}"
          + (f", pictures in {pictures}" if draw else ""))
    return rows
