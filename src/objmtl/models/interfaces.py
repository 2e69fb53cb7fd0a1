"""What tasks and export call on a model, written down: one Protocol per kind of model.

Every model names its kind in a class attribute (``kind = "det"``), which ``objmtl-train`` checks against
the task; a model of that kind must offer what its Protocol lists. ``tests/test_model_interfaces.py``
builds every ``conf/model`` config and checks it against its kind's Protocol; these are structural
(``typing.Protocol``), so a model needs no base class to be one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

from torch import Tensor, nn

__all__ = ["Classifier", "DenseDetectorModel", "Detector", "MultiTaskModel", "PoseModel", "SSLModel", "Segmenter",
           "TaskModel"]


@runtime_checkable
class TaskModel(Protocol):
    """Any model: an ``nn.Module`` whose ``kind`` is the task kind it trains under."""

    kind: str

    def forward(self, *args: Any, **kwargs: Any) -> Any: ...

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...


@runtime_checkable
class Classifier(TaskModel, Protocol):
    """``forward(images [N, 3, H, W]) -> logits [N, num_classes]``; export traces ``forward`` as it is."""

    num_classes: int


@runtime_checkable
class Segmenter(TaskModel, Protocol):
    """``forward(images [N, 3, H, W]) -> {"out": [N, num_classes, H, W]}`` (plus ``"aux"`` in training)."""

    num_classes: int


@runtime_checkable
class Detector(TaskModel, Protocol):
    """``forward(images)`` gives raw outputs (``forward(images, image_sizes)`` for a model with
    ``uses_image_sizes = True``, such as Deformable DETR, which masks the padding), ``loss`` their losses against
    the targets (``{"loss": total, ...terms}``), ``postprocess`` the detections of each image in input pixels."""

    num_classes: int

    def loss(self, outputs: Any, targets: Sequence[dict[str, Any]]) -> dict[str, Tensor]: ...

    def postprocess(self, outputs: Any, image_sizes: Tensor) -> list[dict[str, Tensor]]: ...


@runtime_checkable
class DenseDetectorModel(Detector, Protocol):
    """What export's ``DetectorGraph`` also reads of a dense detector (ATSS, FCOS, RetinaNet): the levels'
    strides, where priors sit in their cells, the priors and the box decoding, and the inference settings."""

    strides: list[int]
    anchor_offset: float
    score_thresh: float
    nms_thresh: float
    topk_per_level: int
    max_detections: int

    def anchors(self, outputs: dict[str, list[Tensor]]) -> list[Tensor]: ...

    def decode(self, anchors: Tensor, deltas: Tensor, strides: Tensor,
               max_shape: tuple[int, int] | None = None) -> Tensor: ...

    def _flat(self, x: Tensor, last: int) -> Tensor: ...


@runtime_checkable
class PoseModel(TaskModel, Protocol):
    """``forward(crops [P, 3, H, W]) -> heatmaps [P, K, H / stride, W / stride]``; ``loss`` of heatmaps
    against targets and per-keypoint weights. ``takes_crops`` is true: as a head of a multi-task model it
    runs on person crops, apart from the whole-image heads."""

    stride: int
    num_keypoints: int
    takes_crops: bool

    def loss(self, heatmaps: Tensor, targets: Tensor, weights: Tensor) -> dict[str, Tensor]: ...


@runtime_checkable
class SSLModel(TaskModel, Protocol):
    """``forward(images) -> features [N, feature_dim]`` (the k-NN metric's); ``loss`` of two views, with the
    teacher's momentum of this step."""

    feature_dim: int
    base_momentum: float

    def loss(self, view1: Tensor, view2: Tensor, *, momentum: float) -> dict[str, Tensor]: ...


@runtime_checkable
class MultiTaskModel(TaskModel, Protocol):
    """One trunk, named heads: ``forward(images)`` runs them all; the task steps one head at a time inside
    ``shared_pass`` and gives each head its own parameter group."""

    head_names: list[str]

    def head_parameters(self, name: str) -> list[nn.Parameter]: ...

    def shared_pass(self, images: Tensor) -> Any: ...
