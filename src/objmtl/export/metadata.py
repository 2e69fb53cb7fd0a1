"""What an exported file says about itself (ONNX ``metadata_props``), so that it needs nothing else.

Keys (all values are JSON text, under the ``objmtl.`` prefix in the file):

- ``task``: ``cls`` / ``det`` / ...; ``class_names``; ``input_size`` [H, W] it was traced at;
- ``mean`` / ``std`` (0..1, RGB) and ``normalization_baked`` (true: the graph takes [0, 255] pixels,
  false: it takes ``(pixels / 255 - mean) / std``); ``input_dtype`` (``float32`` or ``uint8``);
- ``eval_transform``: the run's albumentations eval pipeline (the predictor rebuilds it);
- ``outputs``: one line per output describing it; detection also ``nms`` (``onnx`` / ``none``, or ``set``
  for a set predictor such as Deformable DETR: no NMS, ``onnx``'s four outputs), ``score_thresh``,
  ``nms_thresh`` (not for ``set``), ``max_detections``;
- ``kind``: the task kind's export class (``module.Class``, an
  :class:`~objmtl.export.export_kind.ExportKind`) that decodes the outputs; a multi-task file also
  ``heads`` (head -> its output names) and ``head_kinds`` (head -> its kind's class). A file without
  ``kind`` (written before it existed) is decoded by the built-in kind of its ``task``;
- ``objmtl_version`` and ``checkpoint`` (its file name).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from objmtl.errors import UserError

__all__ = ["PREFIX", "read_metadata", "write_metadata"]

PREFIX = "objmtl."


def write_metadata(model: Any, meta: dict[str, Any]) -> None:
    """Sets ``metadata_props`` of an ``onnx.ModelProto`` (in place) from ``meta``."""
    del model.metadata_props[:]
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = PREFIX + key, json.dumps(value, ensure_ascii=False)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The ``objmtl.*`` metadata of an ONNX file (via onnxruntime, without loading the weights twice)."""
    import onnxruntime as ort

    path = Path(path)
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise UserError(f"{path}: not a readable ONNX model ({str(e).splitlines()[0][:160]})") from None
    props = session.get_modelmeta().custom_metadata_map
    meta = {k[len(PREFIX):]: json.loads(v) for k, v in props.items() if k.startswith(PREFIX)}
    if "task" not in meta:
        raise UserError(f"{path}: no objmtl metadata (export it with objmtl-export onnx)")
    return meta
