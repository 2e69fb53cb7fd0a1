"""``objmtl-export onnx``: a checkpoint -> an ONNX file that carries everything a predictor needs.

The exporter is torch's TorchScript-based one (``dynamo=False``), chosen on purpose: the
torch.export-based default failed on data-dependent NMS here, and the traced graphs of
:mod:`objmtl.export.graphs` are written so that tracing keeps batch, height and width dynamic.
The test suite exports, runs onnxruntime and compares, on this path.
"""

from __future__ import annotations

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
from objmtl.export.detr_graph import DetrGraph
from objmtl.export.graphs import (
    ClassifierGraph,
    DetectorGraph,
    Normalize,
    PoseGraph,
    SegmenterGraph,
    output_names,
)
from objmtl.export.metadata import write_metadata
from objmtl.export.mtl_graph import MultiTaskGraph, head_outputs

__all__ = ["DEFAULT_OPSET", "ExportedModel", "build_graph", "export_onnx", "load_for_export", "metadata_of"]

DEFAULT_OPSET = 17

_OUTPUTS = {
    "cls": ["class logits [B, K]"],
    "seg": ["class logits at the input size [B, K, H, W]"],
    "pose": ["keypoint heatmaps [B, K, H / 4, W / 4] of person crops"],
    "det:none": ["per anchor: box xyxy (input pixels) + K class scores [B, A, 4 + K]"],
    "det:onnx": ["boxes xyxy (input pixels) [B, D, 4]", "scores [B, D]", "labels int64 [B, D] (-1: empty)",
                 "detections per image int64 [B]"],
    "det:set": ["boxes xyxy (input pixels) [B, D, 4]", "scores [B, D]", "labels int64 [B, D]",
                "detections per image int64 [B] (= D: top (query, class) pairs, no NMS)"],
}


class ExportedModel:
    """A checkpoint's model, config and metadata, ready to wrap in a graph."""

    def __init__(self, *, model: nn.Module, config: dict[str, Any], path: Path) -> None:
        self.model, self.config, self.path = model, config, path
        self.task = str(config["task"]["name"])
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


def load_for_export(path: str | Path, *, trust: bool = False) -> ExportedModel:
    """Rebuilds the model of an objmtl checkpoint (its stored config) with its weights, in eval mode."""
    from hydra.utils import instantiate

    from objmtl.checkpoint import config_from_checkpoint, load_checkpoint, load_own_weights
    from objmtl.config import register_resolvers

    path = Path(path)
    ckpt = load_checkpoint(path, trust=trust)
    register_resolvers()
    config = config_from_checkpoint(ckpt, path)
    cfg = OmegaConf.create(config)
    model = instantiate(cfg.model)
    load_own_weights(model, ckpt, path)
    def part(key: str) -> Any:  # only what export needs: other nodes may name Hydra-only resolvers
        node = OmegaConf.select(cfg, key)
        return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node

    keypoints = {k: part(f"task.module.{k}") for k in ("keypoint_names", "skeleton", "flip_pairs")}
    plain = {"task": {"name": part("task.name"), "module": {"class_names": part("task.module.class_names"),
                                                            "keypoints": keypoints,
                                                            "flip_test": part("task.module.flip_test"),
                                                            "inference": part("task.module.inference")}},
             "data": {k: part(f"data.{k}") for k in ("mean", "std", "image_size", "eval_transform")}}
    if plain["task"]["name"] == "mtl":
        heads = [str(h) for h in part("task.heads")]
        plain["task"]["heads"] = heads
        plain["task"]["module"]["head_class_names"] = {h: part(f"task.module.heads.{h}.class_names") for h in heads}
        plain["task"]["module"]["keypoints"] = {k: part(f"task.module.heads.pose.{k}") for k in keypoints} \
            if "pose" in heads else {}
        plain["task"]["module"]["flip_test"] = part("task.module.heads.pose.flip_test") if "pose" in heads else None
        plain["data"]["pose_size"] = part("data.pose_size")
    try:  # where the run's images are (for --verify / --show without --image); may not exist here
        from objmtl.data.datamodule import resolve_root

        plain["data"]["root"] = str(resolve_root(part("data.root"), part("data.synth")))
    except UserError:
        plain["data"]["root"] = None
    return ExportedModel(model=model.eval(), config=plain, path=path)


def _is_set_predictor(model: nn.Module) -> bool:
    from objmtl.models.detection import DeformableDETR

    return isinstance(model, DeformableDETR)


def build_graph(exported: ExportedModel, *, bake_norm: bool = False, nms: str = "onnx") -> nn.Module:
    """The traceable module of the checkpoint's task type (see :mod:`objmtl.export.graphs`)."""
    normalize = Normalize(mean=exported.mean, std=exported.std) if bake_norm else Normalize()
    if exported.task == "cls":
        return ClassifierGraph(model=exported.model, normalize=normalize).eval()
    if exported.task == "det" and _is_set_predictor(exported.model):
        if nms != "onnx":
            raise UserError(f"--nms {nms}: Deformable DETR predicts a set (no NMS to leave out); its one layout is "
                            "boxes, scores, labels, count (--nms onnx)")
        return DetrGraph(model=exported.model, normalize=normalize).eval()
    if exported.task == "det":
        return DetectorGraph(model=exported.model, normalize=normalize, nms=nms).eval()
    if exported.task == "seg":
        return SegmenterGraph(model=exported.model, normalize=normalize).eval()
    if exported.task == "mtl":
        module = exported.config["task"]["module"]
        if "det" in exported.heads and _is_set_predictor(exported.model.heads["det"]):
            raise UserError(f"{exported.path}: a Deformable DETR det head under task=mtl has no ONNX graph yet "
                            "(export the dense detectors' heads: atss, fcos, retinanet)")
        if bake_norm and "pose" in exported.heads:
            raise UserError("--bake-norm: not offered for a model with a pose head (its crops are normalised by the "
                            "crop transform)")
        pairs = (module["keypoints"].get("flip_pairs") or []) if module.get("flip_test") is not False else None
        return MultiTaskGraph(model=exported.model, normalize=normalize, nms=nms, flip_pairs=pairs).eval()
    if exported.task == "pose":
        if bake_norm:
            raise UserError("--bake-norm: not offered for pose (its crops are normalised by the crop transform)")
        module = exported.config["task"]["module"]
        pairs = (module["keypoints"].get("flip_pairs") or []) if module.get("flip_test") is not False else None
        return PoseGraph(model=exported.model, normalize=normalize, flip_pairs=pairs).eval()
    raise UserError(f"{exported.path}: objmtl-export has no ONNX graph for task={exported.task} yet")


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
    if exported.task == "det" and _is_set_predictor(exported.model):
        meta.update(nms="set", score_thresh=0.0, max_detections=int(exported.model.max_detections),
                    outputs=_OUTPUTS["det:set"])
    elif exported.task == "det":
        m = exported.model
        meta.update(nms=nms, score_thresh=float(m.score_thresh), nms_thresh=float(m.nms_thresh),
                    max_detections=int(m.max_detections), outputs=_OUTPUTS[f"det:{nms}"])
    elif exported.task == "mtl":
        module = exported.config["task"]["module"]
        det = exported.model.heads["det"] if "det" in exported.heads else None
        groups = head_outputs(exported.heads, nms=nms)
        meta.update(heads=groups, head_class_names=module.get("head_class_names", {}),
                    inputs={"INPUT__0": "images [B, 3, H, W] (cls, det, seg)",
                            **({"INPUT__1": f"person crops [P, 3, {exported.pose_size[0]}, {exported.pose_size[1]}] "
                                            "(pose)"} if "pose" in exported.heads and exported.pose_size else {})},
                    outputs=[f"{h}: {d}" for h in exported.heads
                             for d in _OUTPUTS[f"det:{nms}" if h == "det" else h]], pose_size=exported.pose_size)
        if det is not None:
            meta.update(nms=nms, score_thresh=float(det.score_thresh), nms_thresh=float(det.nms_thresh),
                        max_detections=int(det.max_detections))
        if "pose" in exported.heads:
            meta["keypoints"] = module.get("keypoints", {})
            meta["flip_test"] = module.get("flip_test") is not False
    else:
        meta["outputs"] = _OUTPUTS.get(exported.task, [])
    if exported.task == "pose":
        meta["keypoints"] = exported.config["task"]["module"].get("keypoints", {})
        meta["flip_test"] = exported.config["task"]["module"].get("flip_test") is not False
    if exported.task == "seg" and exported.config["task"]["module"].get("inference") == "slide":
        meta["note"] = "the run evaluates with sliding windows; this graph runs the whole image at once"
        print(f"note: {meta['note']}")
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
    groups = head_outputs(exported.heads, nms=nms) if exported.task == "mtl" else {exported.task: names}
    for head, group in groups.items():
        for name in group:
            axes[name] = {0: "persons" if head == "pose" and exported.task == "mtl" else "batch"}
            if dynamic and head == "det" and nms == "none":
                axes[name][1] = "anchors"
    # two images: GroupNorm refuses a single value per group (1 image, 1 x 1 top level) while tracing
    example = torch.rand(2, 3, *shape) * (255.0 if bake_norm else 1.0)
    example = example.to(torch.uint8) if uint8 else example
    examples: tuple[torch.Tensor, ...] = (example,)
    if getattr(graph, "num_inputs", 1) == 2:  # task=mtl with a pose head: person crops
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
