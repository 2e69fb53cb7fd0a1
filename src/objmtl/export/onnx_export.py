"""``objmtl-export onnx``: a checkpoint -> an ONNX file that carries everything a predictor needs.

The exporter is torch's TorchScript-based one (``dynamo=False``), chosen on purpose: the
torch.export-based default failed on data-dependent NMS here, and the traced graphs of
:mod:`objmtl.export.graphs` are written so that tracing keeps batch, height and width dynamic.
The test suite exports, runs onnxruntime and compares, on this path.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

import objmtl
from objmtl.errors import UserError
from objmtl.export.export_kind import ExportKind, export_kind_of, kind_path
from objmtl.export.graphs import Normalize, output_names
from objmtl.export.metadata import write_metadata

__all__ = ["DEFAULT_OPSET", "ExportedModel", "build_graph", "export_onnx", "load_for_export", "metadata_of"]

DEFAULT_OPSET = 17


class ExportedModel:
    """A checkpoint's model, config and metadata, ready to wrap in a graph.

    ``kind`` is the task kind's :class:`~objmtl.export.export_kind.ExportKind` (``task.kind.export``);
    ``head_kinds`` a multi-head kind's heads' (default: as the built-in kinds of ``config``'s task).
    """

    def __init__(self, *, model: nn.Module, config: dict[str, Any], path: Path, kind: type[ExportKind] | None = None,
                 head_kinds: dict[str, type[ExportKind]] | None = None) -> None:
        self.model, self.config, self.path = model, config, path
        self.task = str(config["task"]["name"])
        if kind is None:
            kind, head_kinds = export_kind_of(config["task"], path=path)
        self.kind, self.head_kinds = kind, dict(head_kinds or {})
        data = config.get("data", {})
        self.mean = [float(v) for v in data.get("mean") or (0.485, 0.456, 0.406)]
        self.std = [float(v) for v in data.get("std") or (0.229, 0.224, 0.225)]
        size = data.get("image_size") or 224
        self.image_size = [int(size), int(size)] if isinstance(size, int) else [int(v) for v in size]
        self.eval_transform = data.get("eval_transform") or {}
        module = config["task"].get("module", {})
        names = module.get("class_names")
        self.class_names = [str(c) for c in names] if isinstance(names, list) else []
        self.heads: list[str] = list(config["task"].get("heads") or [])  # task=mtl
        pose = data.get("pose_size")
        self.pose_size = [int(v) for v in pose] if pose else None

    def sub(self, head: str) -> ExportedModel:
        """Head ``head`` of a multi-task model: its model and kind, this config with the head's own ``task.module``
        keys over the multi-task one's (``head_modules``, as the multi-task export's ``plain_config`` keeps them)."""
        sub = copy.copy(self)
        sub.model, sub.kind, sub.task, sub.head_kinds = self.model.heads[head], self.head_kinds[head], head, {}
        module = self.config["task"].get("module", {})
        own = (module.get("head_modules") or {}).get(head)
        if own:
            sub.config = {**self.config, "task": {**self.config["task"], "module": {**module, **own}}}
        return sub


def load_for_export(path: str | Path, *, trust: bool = False) -> ExportedModel:
    """Rebuilds the model of an objmtl checkpoint (its stored config) with its weights, in eval mode."""
    from hydra.utils import instantiate

    import objmtl.config  # noqa: F401  (its import registers the resolvers the stored config names)
    from objmtl.checkpoint import config_from_checkpoint, load_checkpoint, load_own_weights

    path = Path(path)
    ckpt = load_checkpoint(path, trust=trust)
    config = config_from_checkpoint(ckpt, path)
    cfg = OmegaConf.create(config)
    kind, head_kinds = export_kind_of(cfg.task, path=path)
    model = instantiate(cfg.model)
    load_own_weights(model, ckpt, path)

    def part(key: str) -> Any:  # only what export needs: other nodes may name Hydra-only resolvers
        node = OmegaConf.select(cfg, key)
        return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node

    plain = kind.plain_config(part, head_kinds=head_kinds)
    try:  # where the run's images are (for --verify / --show without --image); may not exist here
        from objmtl.data.datamodule import resolve_root

        plain["data"]["root"] = str(resolve_root(part("data.root"), part("data.synth")))
    except UserError:
        plain["data"]["root"] = None
    return ExportedModel(model=model.eval(), config=plain, path=path, kind=kind, head_kinds=head_kinds)


def build_graph(exported: ExportedModel, *, bake_norm: bool = False, nms: str = "onnx") -> nn.Module:
    """The traceable module of the checkpoint's task kind (``ExportKind.graph``; :mod:`objmtl.export.graphs`)."""
    normalize = Normalize(mean=exported.mean, std=exported.std) if bake_norm else Normalize()
    return exported.kind.graph(exported, normalize=normalize, bake_norm=bake_norm, nms=nms).eval()


def metadata_of(exported: ExportedModel, *, shape: Sequence[int], bake_norm: bool, uint8: bool,
                nms: str, dynamic: bool = True) -> dict[str, Any]:
    """The ``objmtl.*`` metadata (:mod:`objmtl.export.metadata`) of a graph of ``exported``."""
    meta: dict[str, Any] = {
        "task": exported.task, "dynamic_size": dynamic, "class_names": exported.class_names, "input_size": list(shape),
        "mean": exported.mean, "std": exported.std, "normalization_baked": bake_norm,
        "input_dtype": "uint8" if uint8 else "float32", "layout": "NCHW, RGB",
        "eval_transform": exported.eval_transform, "objmtl_version": objmtl.__version__,
        "checkpoint": exported.path.name,
    }
    meta.update(exported.kind.metadata(exported, nms=nms), kind=kind_path(exported.kind))
    return meta


def export_onnx(exported: ExportedModel, *, out: str | Path, shape: Sequence[int] | None = None,
                dynamic: bool = False, opset: int = DEFAULT_OPSET, bake_norm: bool = False, uint8: bool = False,
                nms: str = "onnx") -> Path:
    """Traces the task graph of ``exported`` and writes ``out`` with its metadata.

    Args:
        exported: :func:`load_for_export`'s result.
        out: the ``.onnx`` file.
        shape: (H, W) traced at; default the run's ``data.image_size``.
        dynamic: batch, height and width (and detection's anchors axis) dynamic; else batch only.
        opset: ONNX opset (>= 16 for GridSample; 17 by default).
        bake_norm: normalisation inside the graph: it takes [0, 255] pixels.
        uint8: with ``bake_norm``, the input is uint8.
        nms: detection only: ``onnx`` (NMS in the graph) or ``none`` (dense outputs).

    Returns:
        The written path.
    """
    import onnx

    if uint8 and not bake_norm:
        raise UserError("--uint8 needs --bake-norm (a uint8 input holds pixels, which the graph must normalise)")
    if opset < 16:
        raise UserError(f"--opset {opset}: use 16 or newer (GridSample and the NMS layout need it)")
    shape = [int(v) for v in (shape or exported.image_size)]
    if not dynamic and shape != exported.image_size:
        raise UserError(f"--shape {shape[0]} {shape[1]}: a fixed-size export must take the size the eval transform "
                        f"gives ({exported.image_size[0]} {exported.image_size[1]}); add --dynamic for other sizes")
    graph = build_graph(exported, bake_norm=bake_norm, nms=nms)
    names = output_names(graph)
    inputs = ["INPUT__0"]
    axes: dict[str, dict[int, str]] = {"INPUT__0": {0: "batch"}}
    if dynamic:
        axes["INPUT__0"].update({2: "height", 3: "width"})
    axes.update(exported.kind.output_axes(exported, names=names, nms=nms, dynamic=dynamic))
    # two images: GroupNorm refuses a single value per group (1 image, 1 x 1 top level) while tracing
    example = torch.rand(2, 3, *shape) * (255.0 if bake_norm else 1.0)
    example = example.to(torch.uint8) if uint8 else example
    examples: tuple[torch.Tensor, ...] = (example,)
    if getattr(graph, "num_inputs", 1) == 2:  # a multi-task graph with a head that takes person crops
        inputs.append("INPUT__1")
        axes["INPUT__1"] = {0: "persons", **({2: "crop_height", 3: "crop_width"} if dynamic else {})}
        examples = (example, torch.randn(2, 3, *(exported.pose_size or (256, 192))))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python values that are constant by design
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        with torch.no_grad():
            torch.onnx.export(graph, examples, str(out), dynamo=False, opset_version=opset,
                              input_names=inputs, output_names=names, dynamic_axes=axes,
                              do_constant_folding=True)
    model = onnx.load(str(out))
    write_metadata(model, metadata_of(exported, shape=shape, bake_norm=bake_norm, uint8=uint8, nms=nms,
                                      dynamic=dynamic))
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    return out
