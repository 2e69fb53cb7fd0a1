"""Export and prediction of task kind ``mtl``: every head's output group in one graph, each head's pieces
its own task kind's (``task.kind.heads``; in the file ``objmtl.head_kinds``).

The graph is :class:`~objmtl.export.mtl_graph.MultiTaskGraph`; ``objmtl.heads`` maps each head to its
output names; prediction runs each head's preprocessing and decoding (:mod:`objmtl.export.mtl_predict`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from torch import nn

from objmtl.errors import UserError
from objmtl.export.det_export import is_set_predictor
from objmtl.export.export_kind import ExportKind, kind_path, meta_head_kinds
from objmtl.export.graphs import Normalize
from objmtl.export.mtl_graph import MultiTaskGraph, head_outputs
from objmtl.export.mtl_predict import HeadRunner, head_meta
from objmtl.export.preprocess import Preprocessor

__all__ = ["MultiTaskExport"]


def _crop_heads(kinds: dict[str, type[ExportKind]]) -> list[str]:
    return [h for h, k in kinds.items() if k.input == "crops"]


class MultiTaskExport(ExportKind):
    task = "mtl"

    @classmethod
    def plain_config(cls, part: Callable[[str], Any], *,
                     head_kinds: dict[str, type[ExportKind]] | None = None) -> dict[str, Any]:
        plain = super().plain_config(part)
        heads = [str(h) for h in part("task.heads")]
        module = plain["task"]["module"]
        module["head_class_names"], module["keypoints"], module["flip_test"] = {}, {}, None
        module["head_modules"] = {}  # each head's own, for its graph and metadata (ExportedModel.sub)
        for head in heads:  # each head's task.module, read as its own kind reads a single-task one
            kind = (head_kinds or {}).get(head, ExportKind)
            sub = kind.plain_config(lambda key, h=head: part(key.replace("task.module.", f"task.module.heads.{h}.", 1))
                                    if key.startswith("task.module.") else part(key))["task"]["module"]
            module["head_modules"][head] = sub
            module["head_class_names"][head] = sub["class_names"]
            if any(v is not None for v in sub["keypoints"].values()):  # the head with keypoints (pose)
                module["keypoints"], module["flip_test"] = sub["keypoints"], sub["flip_test"]
        plain["task"]["heads"] = heads
        plain["data"]["pose_size"] = part("data.pose_size")
        return plain

    @classmethod
    def graph(cls, exported: Any, *, normalize: Normalize, bake_norm: bool, nms: str) -> nn.Module:
        kinds, model = exported.head_kinds, exported.model
        for head in exported.heads:
            if is_set_predictor(model.heads[head]):
                raise UserError(f"{exported.path}: a Deformable DETR {head} head under task=mtl has no ONNX graph "
                                "yet (export the dense detectors' heads: atss, fcos, retinanet)")
        crops = _crop_heads({h: kinds[h] for h in exported.heads})
        if bake_norm and crops:
            raise UserError(f"--bake-norm: not offered for a model with a {crops[0]} head (its crops are normalised "
                            "by the crop transform)")
        plain = Normalize()  # the whole-image heads get INPUT__0 normalised once, by the multi-task graph
        graphs = {h: kinds[h].head_graph(model.heads[h], normalize=plain, nms=nms,
                                         module=exported.sub(h).config["task"]["module"])
                  for h in exported.heads}
        counts = {h: kinds[h].num_outputs(model.heads[h], nms=nms) for h in exported.heads}
        return MultiTaskGraph(model=model, normalize=normalize, graphs=graphs, counts=counts, crop_heads=crops).eval()

    @classmethod
    def groups(cls, exported: Any, *, nms: str) -> dict[str, list[str]]:
        """Head -> its output names."""
        return head_outputs({h: exported.head_kinds[h].num_outputs(exported.model.heads[h], nms=nms)
                             for h in exported.heads})

    @classmethod
    def metadata(cls, exported: Any, *, nms: str) -> dict[str, Any]:
        kinds, module = exported.head_kinds, exported.config["task"]["module"]
        crops = _crop_heads({h: kinds[h] for h in exported.heads})
        whole = [h for h in exported.heads if h not in crops]
        meta: dict[str, Any] = {}
        outputs = []
        for head in exported.heads:
            sub = kinds[head].metadata(exported.sub(head), nms=nms)
            outputs += [f"{head}: {d}" for d in sub.pop("outputs", [])]
            meta.update(sub)  # a head's own settings: det's NMS, pose's keypoints
        size = exported.pose_size
        meta.update(heads=cls.groups(exported, nms=nms), head_class_names=module.get("head_class_names", {}),
                    inputs={"INPUT__0": f"images [B, 3, H, W] ({', '.join(whole)})",
                            **({"INPUT__1": f"person crops [P, 3, {size[0]}, {size[1]}] ({', '.join(crops)})"}
                               if crops and size else {})},
                    outputs=outputs, pose_size=size,
                    head_kinds={h: kind_path(kinds[h]) for h in exported.heads})
        return meta

    @classmethod
    def output_axes(cls, exported: Any, *, names: Sequence[str], nms: str,
                    dynamic: bool) -> dict[str, dict[int, str]]:
        axes: dict[str, dict[int, str]] = {}
        for head, group in cls.groups(exported, nms=nms).items():
            kind = exported.head_kinds[head]
            for name, ax in kind.output_axes(exported.sub(head), names=group, nms=nms, dynamic=dynamic).items():
                axes[name] = {**ax, 0: "persons"} if kind.input == "crops" else ax
        return axes

    @classmethod
    def detection_outputs(cls, exported: Any, graph: nn.Module, *, names: Sequence[str],
                          nms: str) -> bool | list[list[str]]:
        return [group for head, group in graph.names.items()
                if exported.head_kinds[head].detection_outputs(exported.sub(head), graph.graphs[head], names=group,
                                                               nms=nms) is True]

    @classmethod
    def whole_image_head(cls, kinds: dict[str, type[ExportKind]]) -> str:
        """The head whose eval pipeline prepares ``INPUT__0`` for ``--verify`` (a padding one first)."""
        images = [h for h, k in kinds.items() if k.input == "images"]
        return next((h for h in images if kinds[h].pad), images[0] if images else next(iter(kinds)))

    @classmethod
    def verify_preprocessor(cls, exported: Any, **prep: Any) -> Preprocessor:
        """The preprocessing of ``INPUT__0`` for ``--verify``."""
        head = cls.whole_image_head({h: exported.head_kinds[h] for h in exported.heads})
        kind = exported.head_kinds[head]
        return Preprocessor(eval_transform=exported.eval_transform[head], task=head, crops=kind.input == "crops",
                            pad=kind.pad, **prep)

    @classmethod
    def verification_inputs(cls, exported: Any, *, images: Sequence[np.ndarray], batches: list[Any],
                            **prep: Any) -> list[Any]:
        crops = _crop_heads({h: exported.head_kinds[h] for h in exported.heads})
        if not crops:
            return batches
        # and person crops: each image as one person, through the crop head's pipeline
        pipeline = Preprocessor(eval_transform=exported.eval_transform[crops[0]], task=crops[0], crops=True)
        return [(b, pipeline(images[: max(1, len(b))]).batch) for b in batches]

    @classmethod
    def check_show(cls) -> None:
        raise UserError("--show: not offered for task=mtl yet (its --verify compares every head's outputs)")

    @classmethod
    def parts(cls, result: dict[str, Any], meta: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any],
                                                                               type[ExportKind]]]:
        kinds = meta_head_kinds(meta)
        return [(h, r, head_meta(meta, h), kinds[h]) for h, r in result.items()]

    @classmethod
    def text_lines(cls, rows: Sequence[dict[str, Any]], meta: dict[str, Any]) -> list[str] | None:
        for head, kind in meta_head_kinds(meta).items():
            lines = kind.text_lines([{"image": r["image"], **r[head]} for r in rows if head in r], head_meta(meta, head))
            if lines is not None:
                return lines
        return None

    @classmethod
    def predictor(cls, *, run: Callable[[Any], list[np.ndarray]], meta: dict[str, Any]) -> Callable[..., Any]:
        return HeadRunner(run=run, meta=meta, kinds=meta_head_kinds(meta))

