"""Multi-scale feature extractors built from torchvision classification models.

Each supported family declares, in ``_FAMILIES``, which module prefixes form its stem and each of its four
feature levels C2..C5 (strides 4, 8, 16, 32). The last prefix of a level is the graph node whose output is
returned for that level. Channels and strides are measured once at construction, never hand-typed.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import torch
import torchvision
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torchvision.models.feature_extraction import create_feature_extractor

from objmtl.errors import UserError

__all__ = ["Backbone", "build_backbone", "BACKBONE_NAMES"]

log = logging.getLogger(__name__)

_PROBE_SIZE = 64  # side of the dummy input used to measure channels and strides
_NUM_LEVELS = 4


@dataclass(frozen=True)
class _Stages:
    """Module prefixes of a family: the stem and, per level C2..C5, the modules ending at that stride."""

    stem: tuple[str, ...]
    levels: tuple[tuple[str, ...], ...]  # levels[i][-1] is the return node of level i


def _indexed(prefix: str, *, stem_last: int, level_last: tuple[int, int, int, int]) -> _Stages:
    """Stages of a ``prefix.0 .. prefix.K`` sequential: blocks up to ``stem_last`` form the stem; level i
    runs from the previous level's last block + 1 to ``level_last[i]``, the last block at its stride."""
    bounds = (stem_last, *level_last)
    return _Stages(
        stem=tuple(f"{prefix}.{j}" for j in range(stem_last + 1)),
        levels=tuple(tuple(f"{prefix}.{j}" for j in range(a + 1, b + 1)) for a, b in pairwise(bounds)),
    )


_FAMILIES: dict[str, _Stages] = {
    "resnet": _Stages(stem=("conv1", "bn1"), levels=(("layer1",), ("layer2",), ("layer3",), ("layer4",))),
    "mobilenet_v3_small": _indexed("features", stem_last=0, level_last=(1, 3, 8, 12)),
    "mobilenet_v3_large": _indexed("features", stem_last=1, level_last=(3, 6, 12, 16)),
    "efficientnet": _indexed("features", stem_last=1, level_last=(2, 3, 5, 8)),
    "convnext": _indexed("features", stem_last=0, level_last=(1, 3, 5, 7)),
    "regnet": _Stages(stem=("stem",), levels=tuple((f"trunk_output.block{i}",) for i in range(1, 5))),
}

_MODEL_FAMILY: dict[str, str] = {
    "resnet18": "resnet",
    "resnet34": "resnet",
    "resnet50": "resnet",
    "resnet101": "resnet",
    "mobilenet_v3_small": "mobilenet_v3_small",
    "mobilenet_v3_large": "mobilenet_v3_large",
    "efficientnet_b0": "efficientnet",
    "convnext_tiny": "convnext",
    "regnet_y_400mf": "regnet",
    "regnet_x_400mf": "regnet",
}

BACKBONE_NAMES: tuple[str, ...] = tuple(_MODEL_FAMILY)


def _matches(name: str, prefixes: Sequence[str]) -> bool:
    """True if the dotted module/parameter ``name`` is one of ``prefixes`` or lies below one."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


class Backbone(nn.Module):
    """Feature pyramid extractor over a torchvision classification model.

    Args:
        name: Torchvision model name, one of ``BACKBONE_NAMES``.
        model: The full torchvision model, weights already loaded.
        out_indices: Levels to return, in order; 0..3 stand for C2..C5 (strides 4, 8, 16, 32).
        frozen_stages: -1 freezes nothing, 0 the stem, k >= 1 the stem and the first k levels.
        norm_eval: Keep every BatchNorm in eval mode (running stats frozen) in ``train()``.

    Attributes:
        name: The torchvision model name.
        out_channels: Channels of each returned map, in ``out_indices`` order.
        strides: Stride (input size / map size) of each returned map.
    """

    def __init__(
        self,
        *,
        name: str,
        model: nn.Module,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        frozen_stages: int = -1,
        norm_eval: bool = False,
    ) -> None:
        super().__init__()
        stages = _FAMILIES[_MODEL_FAMILY[name]]
        out_indices = tuple(int(i) for i in out_indices)
        if not out_indices or len(set(out_indices)) != len(out_indices):
            raise UserError(f"backbone out_indices {out_indices}: must be non-empty and without repeats")
        if not all(0 <= i < _NUM_LEVELS for i in out_indices):
            raise UserError(f"backbone out_indices {out_indices}: each must be in 0..{_NUM_LEVELS - 1}")
        if not -1 <= frozen_stages <= _NUM_LEVELS:
            raise UserError(f"backbone frozen_stages={frozen_stages}: must be in -1..{_NUM_LEVELS}")

        self.name = name
        self.norm_eval = norm_eval
        self._keys = tuple(f"c{i + 2}" for i in out_indices)
        return_nodes = {stages.levels[i][-1]: key for i, key in zip(out_indices, self._keys, strict=True)}
        self.body = create_feature_extractor(model, return_nodes=return_nodes)

        frozen: tuple[str, ...] = ()
        if frozen_stages >= 0:
            frozen = stages.stem + tuple(p for level in stages.levels[:frozen_stages] for p in level)
        self._frozen_prefixes = frozen
        for pname, param in self.body.named_parameters():
            if _matches(pname, frozen):
                param.requires_grad_(False)

        self.eval()
        with torch.no_grad():
            probe = torch.zeros(1, 3, _PROBE_SIZE, _PROBE_SIZE)  # [1, 3, 64, 64]
            feats = self(probe)  # list of [1, C_i, 64 / s_i, 64 / s_i]
        self.out_channels: list[int] = [int(f.shape[1]) for f in feats]
        self.strides: list[int] = [_PROBE_SIZE // int(f.shape[-1]) for f in feats]
        self.train()

    def forward(self, x: Tensor) -> list[Tensor]:
        """Extract the selected feature maps.

        Args:
            x: Images, shape [N, 3, H, W].

        Returns:
            One tensor per out index, shape [N, out_channels[i], ~ceil(H / strides[i]), ~ceil(W / strides[i])].
        """
        feats = self.body(x)  # dict key -> [N, C, h, w]
        return [feats[k] for k in self._keys]

    def train(self, mode: bool = True) -> Backbone:
        """Set train/eval mode, keeping frozen stages (and all BatchNorms if ``norm_eval``) in eval mode."""
        super().train(mode)
        if mode:
            for mname, module in self.body.named_modules():
                if _matches(mname, self._frozen_prefixes) or (
                    self.norm_eval and isinstance(module, _BatchNorm)
                ):
                    module.eval()
        return self


def _is_path(weights: str) -> bool:
    return "/" in weights or os.sep in weights or weights.endswith((".pt", ".pth", ".ckpt"))


def _resolve_weights(name: str, weights: str) -> Any:
    """Map a torchvision weights name ("DEFAULT", "IMAGENET1K_V1", ...) to its enum member, downloading nothing."""
    enum_cls = torchvision.models.get_model_weights(name)
    try:
        return enum_cls.verify(weights)
    except (KeyError, ValueError):
        known = ", ".join(["DEFAULT", *(member.name for member in enum_cls)])
        raise UserError(f"backbone weights {weights!r}: unknown for {name} (known: {known})") from None


def _extract_state_dict(obj: Any, path: str) -> dict[str, Tensor]:
    """Unwrap ``{"state_dict": ...}`` / ``{"model": ...}`` and keep the tensor entries."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise UserError(f"backbone weights {path}: expected a state dict, got {type(obj).__name__}")
    return {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, Tensor)}


def _strip_prefix(state: dict[str, Tensor], model_keys: set[str]) -> tuple[dict[str, Tensor], str]:
    """Find the most common key prefix (e.g. "model.backbone.") that maps checkpoint keys onto model keys."""
    votes: Counter[str] = Counter()
    for key in state:
        parts = key.split(".")
        for i in range(len(parts)):
            if ".".join(parts[i:]) in model_keys:
                votes["".join(p + "." for p in parts[:i])] += 1
                break
    if not votes:
        return {}, ""
    prefix = votes.most_common(1)[0][0]
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}, prefix


def _load_local_weights(model: nn.Module, path: str) -> None:
    """Load a local checkpoint into the full torchvision ``model`` (strict=False), logging key mismatches."""
    if not os.path.isfile(path):
        raise UserError(f"backbone weights {path}: file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"backbone weights {path}: cannot read ({reason})") from None
    own = model.state_dict()
    state, prefix = _strip_prefix(_extract_state_dict(obj, path), set(own))
    if not state:
        raise UserError(f"backbone weights {path}: no key matches a parameter of the model")
    mismatched = [k for k, v in state.items() if k in own and v.shape != own[k].shape]
    for k in mismatched:
        del state[k]
    result = model.load_state_dict(state, strict=False)
    log.info("loaded %d tensors from %s (prefix stripped: %r)", len(state), path, prefix)
    for label, keys in (("missing", result.missing_keys), ("unexpected", result.unexpected_keys)):
        if keys:
            log.warning("%d %s keys loading %s, e.g. %s", len(keys), label, path, keys[:5])
    if mismatched:
        log.warning(
            "%d keys skipped for shape mismatch loading %s, e.g. %s", len(mismatched), path, mismatched[:5]
        )


def build_backbone(
    *,
    name: str,
    out_indices: Sequence[int] = (0, 1, 2, 3),
    weights: str | None = None,
    frozen_stages: int = -1,
    norm_eval: bool = False,
) -> Backbone:
    """Build a multi-scale backbone from a torchvision classification model.

    Args:
        name: One of ``BACKBONE_NAMES``.
        out_indices: Levels to return, in order; 0..3 stand for C2..C5 (strides 4, 8, 16, 32).
        weights: None for random init; a torchvision weights name ("DEFAULT", "IMAGENET1K_V1"), downloaded by
            torchvision; or a local checkpoint path (state dict, optionally under "state_dict" or "model").
        frozen_stages: -1 freezes nothing, 0 the stem, k >= 1 the stem and the first k levels.
        norm_eval: Keep every BatchNorm in eval mode during training.

    Returns:
        A ``Backbone`` in train mode mapping [N, 3, H, W] to a list of [N, C_i, H / s_i, W / s_i].

    Raises:
        UserError: Unknown backbone or weights name, or an unreadable / missing weights file.
    """
    if name not in _MODEL_FAMILY:
        raise UserError(f"backbone {name!r}: unknown (supported: {', '.join(BACKBONE_NAMES)})")
    if weights is None or _is_path(weights):
        model = torchvision.models.get_model(name, weights=None)
        if weights is not None:
            _load_local_weights(model, weights)
    else:
        model = torchvision.models.get_model(name, weights=_resolve_weights(name, weights))
    return Backbone(
        name=name, model=model, out_indices=out_indices, frozen_stages=frozen_stages, norm_eval=norm_eval
    )
