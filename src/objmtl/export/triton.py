"""A Triton Inference Server model repository for an exported ONNX file.

Layout (Triton's): ``DIR/<name>/config.pbtxt`` and ``DIR/<name>/1/model.onnx``. The config names
the ``onnxruntime_onnx`` platform, ``max_batch_size`` and every input and output with its data
type and dims read from the ONNX graph (the batch axis left out, as Triton wants when
``max_batch_size > 0``; other dynamic axes as -1).
"""

from __future__ import annotations

import shutil
from pathlib import Path

__all__ = ["triton_config", "write_triton_repository"]

_TYPES = {1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 5: "TYPE_INT16", 6: "TYPE_INT32", 7: "TYPE_INT64",
          9: "TYPE_BOOL", 10: "TYPE_FP16", 11: "TYPE_FP64"}


def _tensors(values: list, *, batched: bool) -> list[tuple[str, str, list[int]]]:
    out = []
    for v in values:
        t = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        out.append((v.name, _TYPES.get(t.elem_type, "TYPE_FP32"), dims[1:] if batched else dims))
    return out


def triton_config(onnx_path: str | Path, *, name: str, max_batch_size: int = 8) -> str:
    """The ``config.pbtxt`` text (protobuf text format) for the model at ``onnx_path``."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    init = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in init]
    firsts = [i.type.tensor_type.shape.dim[0] for i in inputs]
    # Triton batches along the first axis of every input: only when they all share one dynamic batch axis
    # (a multi-task graph's person crops have their own count)
    batched = (max_batch_size > 0 and not any(d.HasField("dim_value") for d in firsts)
               and len({d.dim_param for d in firsts}) == 1)
    lines = [f'name: "{name}"', 'platform: "onnxruntime_onnx"', f"max_batch_size: {max_batch_size if batched else 0}"]
    for kind, values in (("input", inputs), ("output", list(graph.output))):
        entries = []
        for tensor_name, dtype, dims in _tensors(values, batched=batched):
            # one value per batch item (detection's count): Triton wants dims [ 1 ] reshaped to a scalar
            shape = f'    dims: [ {", ".join(map(str, dims))} ]' if dims else "    dims: [ 1 ]\n    reshape: { shape: [ ] }"
            entries.append(f'  {{\n    name: "{tensor_name}"\n    data_type: {dtype}\n{shape}\n  }}')
        lines.append(f"{kind} [\n" + ",\n".join(entries) + "\n]")
    return "\n".join(lines) + "\n"


def write_triton_repository(onnx_path: str | Path, root: str | Path, *, name: str | None = None,
                            max_batch_size: int = 8) -> Path:
    """Copies the model into ``root/<name>/1/model.onnx`` beside its ``config.pbtxt``; returns the config path."""
    onnx_path = Path(onnx_path)
    name = name or onnx_path.stem
    model_dir = Path(root) / name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_path, model_dir / "1" / "model.onnx")
    config = model_dir / "config.pbtxt"
    config.write_text(triton_config(onnx_path, name=name, max_batch_size=max_batch_size), encoding="utf-8")
    return config
