"""What ``objmtl-export`` and ``objmtl-predict`` call on a task kind: its graph, metadata and decoding.

A task kind names its :class:`ExportKind` in ``conf/kind/<name>.yaml`` (``export``). The exporter records
that class in the ONNX file (``objmtl.kind``; a multi-head kind's heads in ``objmtl.head_kinds``), so a
predictor finds the decoding from the file alone; a file written before the key existed gets the built-in
kind of its ``objmtl.task``. The defaults below are those of a kind with one image input and one output.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
from torch import nn

from objmtl.errors import UserError
from objmtl.export.graphs import Normalize
from objmtl.export.preprocess import Prepared, Preprocessor
from objmtl.task_kinds import builtin_kind, head_pieces, kind_of, piece

__all__ = ["ExportKind", "export_kind_of", "kind_path", "meta_kind", "meta_head_kinds"]


class ExportKind:
    """A task kind's export and prediction pieces (class methods; no state). ``exported`` is always an
    :class:`~objmtl.export.onnx_export.ExportedModel` (``Any`` here: that module imports this one).

    Attributes:
        task: the kind's name (``objmtl.task`` in the file).
        input: ``images`` (the whole image, resized as the eval transform says) or ``crops`` (top-down: a
            person crop per input, ``TopDownCrop``); a multi-task graph feeds crops as ``INPUT__1``.
        pad: inputs padded at the bottom and right to a multiple of 32, as training batches are; else the
            eval transform must give every image one size.
        outputs: what each output holds, in order (``objmtl.outputs``).
    """

    task: ClassVar[str] = ""
    input: ClassVar[str] = "images"
    pad: ClassVar[bool] = False
    outputs: ClassVar[list[str]] = []

    # ---- export: checkpoint -> graph and metadata ----

    @classmethod
    def plain_config(cls, part: Callable[[str], Any], *,
                     head_kinds: dict[str, type[ExportKind]] | None = None) -> dict[str, Any]:
        """The part of the run config export needs (``part(key)``: one resolved node), as plain containers
        (``head_kinds``: a multi-head kind's heads)."""
        keypoints = {k: part(f"task.module.{k}") for k in ("keypoint_names", "skeleton", "flip_pairs")}
        return {"task": {"name": part("task.name"),
                         "module": {"class_names": part("task.module.class_names"), "keypoints": keypoints,
                                    "flip_test": part("task.module.flip_test"),
                                    "inference": part("task.module.inference")}},
                "data": {k: part(f"data.{k}") for k in ("mean", "std", "image_size", "eval_transform")}}

    @classmethod
    def graph(cls, exported: Any, *, normalize: Normalize, bake_norm: bool, nms: str) -> nn.Module:
        """The traceable module of ``exported`` (:mod:`objmtl.export.graphs`)."""
        return cls.head_graph(exported.model, normalize=normalize, nms=nms, module=exported.config["task"]["module"])

    @classmethod
    def head_graph(cls, model: nn.Module, *, normalize: Normalize, nms: str, module: dict[str, Any]) -> nn.Module:
        """The graph of ``model`` alone or as a head of a multi-task model (``module``: ``task.module``)."""
        raise UserError(f"objmtl-export has no ONNX graph for task={cls.task} yet")

    @classmethod
    def num_outputs(cls, model: nn.Module, *, nms: str) -> int:
        """How many outputs :meth:`head_graph` gives."""
        return 1

    @classmethod
    def metadata(cls, exported: Any, *, nms: str) -> dict[str, Any]:
        """The kind's own ``objmtl.*`` entries beside the common ones (outputs, NMS settings, keypoints)."""
        return {"outputs": list(cls.outputs)}

    @classmethod
    def output_axes(cls, exported: Any, *, names: Sequence[str], nms: str,
                    dynamic: bool) -> dict[str, dict[int, str]]:
        """The dynamic axes of each output."""
        return {name: {0: "batch"} for name in names}

    @classmethod
    def detection_outputs(cls, exported: Any, graph: nn.Module, *, names: Sequence[str],
                          nms: str) -> bool | list[list[str]]:
        """For ``--verify``: whether the outputs are boxes, scores, labels, counts (matched, not compared
        slot by slot); a multi-head kind lists the groups that are."""
        return False

    @classmethod
    def verification_inputs(cls, exported: Any, *, images: Sequence[np.ndarray], batches: list[Any],
                            **prep: Any) -> list[Any]:
        """The ``--verify`` batches (a kind with a second input adds it)."""
        return batches

    @classmethod
    def verify_preprocessor(cls, exported: Any, **prep: Any) -> Preprocessor:
        """The preprocessing of ``INPUT__0`` for ``--verify`` and ``--show`` (``prep``: baked, uint8, mean,
        fixed_size)."""
        return Preprocessor(eval_transform=exported.eval_transform, task=cls.task, crops=cls.input == "crops",
                            pad=cls.pad, **prep)

    @classmethod
    def check_show(cls) -> None:
        """A UserError when ``objmtl-export --show`` cannot draw this kind."""

    # ---- prediction: metadata, images -> results ----

    @classmethod
    def preprocessor(cls, meta: dict[str, Any], *, eval_transform: Any = None, baked: bool | None = None,
                     uint8: bool | None = None, fixed_size: Sequence[int] | None = None,
                     dynamic: bool | None = None) -> Preprocessor:
        """The :class:`Preprocessor` of this kind's inputs, as ``meta`` (the file's metadata) says; the
        keywords override it."""
        if dynamic is None:
            dynamic = bool(meta.get("dynamic_size", True))
        return Preprocessor(eval_transform=meta["eval_transform"] if eval_transform is None else eval_transform,
                            task=cls.task, crops=cls.input == "crops", pad=cls.pad,
                            baked=bool(meta.get("normalization_baked")) if baked is None else baked,
                            uint8=(meta.get("input_dtype") == "uint8") if uint8 is None else uint8,
                            mean=meta["mean"], fixed_size=fixed_size if fixed_size is not None
                            else (None if dynamic else meta["input_size"]))

    @classmethod
    def predictor(cls, *, run: Callable[[Any], list[np.ndarray]],
                  meta: dict[str, Any]) -> Callable[..., list[dict[str, Any]]]:
        """``predict(images, top_k=, score_thr=) -> one result per image`` over the backend ``run``."""
        prep = cls.preprocessor(meta)

        def predict(images: Sequence[np.ndarray], *, top_k: int, score_thr: float) -> list[dict[str, Any]]:
            prepared = prep(images)
            return cls.results(run(prepared.batch), meta=meta, prepared=prepared, top_k=top_k, score_thr=score_thr)

        return predict

    @classmethod
    def parts(cls, result: dict[str, Any],
              meta: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any], type[ExportKind]]]:
        """One image's result as ``(subfolder, result, metadata, kind)`` to draw and write (a multi-head kind:
        one per head)."""
        return [("", result, meta, cls)]

    @classmethod
    def results(cls, outputs: Sequence[np.ndarray], *, meta: dict[str, Any], prepared: Prepared, top_k: int,
                score_thr: float) -> list[dict[str, Any]]:
        """The graph's outputs of one batch -> one result per image, in original pixels."""
        raise NotImplementedError

    @classmethod
    def draw(cls, image: np.ndarray, result: dict[str, Any], meta: dict[str, Any], *,
             keypoint_thr: float = 0.2) -> np.ndarray:
        """One image's result drawn on it."""
        raise NotImplementedError

    @classmethod
    def text_lines(cls, rows: Sequence[dict[str, Any]], meta: dict[str, Any]) -> list[str] | None:
        """``objmtl-predict``'s ``predictions.txt`` lines for ``rows`` (``{"image": name, **result}``), or
        None when the kind writes none."""
        return None


def kind_path(cls: type) -> str:
    """``module.Class`` of ``cls``, as ``hydra.utils.get_class`` takes it (recorded in the ONNX file)."""
    return f"{cls.__module__}.{cls.__qualname__}"


def export_kind_of(task: dict[str, Any], *, path: Any = "") -> tuple[type[ExportKind], dict[str, type[ExportKind]]]:
    """A run config's (``cfg.task``) export kind and its heads' export kinds."""
    kind = kind_of(task)
    if kind.get("export") is None:
        raise UserError(f"{path}: objmtl-export has no ONNX graph for task={task['name']} yet")
    return piece(kind, "export"), head_pieces(kind, "export")


def meta_kind(meta: dict[str, Any]) -> type[ExportKind]:
    """The export kind of an ONNX file's metadata: ``objmtl.kind``, else the built-in kind of its task."""
    if meta.get("kind"):
        return _load(str(meta["kind"]), where="objmtl.kind")
    return piece(builtin_kind(str(meta["task"])), "export")


def meta_head_kinds(meta: dict[str, Any]) -> dict[str, type[ExportKind]]:
    """A multi-head file's ``{head: export kind}`` (``objmtl.head_kinds``, else the built-in kinds)."""
    recorded = meta.get("head_kinds") or {}
    return {h: _load(str(recorded[h]), where=f"objmtl.head_kinds.{h}") if h in recorded
            else piece(builtin_kind(str(h)), "export") for h in meta.get("heads") or {}}


def _load(path: str, *, where: str) -> type[ExportKind]:
    module, _, name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as e:  # no such module, or no such name in it
        raise UserError(f"{where}={path}: cannot load this task kind's export class ({e})") from None
    if not (isinstance(cls, type) and issubclass(cls, ExportKind)):
        raise UserError(f"{where}={path}: not an objmtl.export.export_kind.ExportKind")
    return cls
