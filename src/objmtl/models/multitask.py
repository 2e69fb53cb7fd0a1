"""One backbone shared by heads of several task types (``task=mtl``).

Each head is an ordinary single-task model (a :class:`~objmtl.models.Classifier`, an ATSS, a Semantic FPN,
a SimpleBaseline, ...) built with a :class:`SharedLevels` in place of its own backbone: a view that runs the
one shared :class:`~objmtl.models.Backbone` (all four levels, C2..C5) and hands the head the levels it asks
for. So the heads keep their own code, losses and post-processing, and every gradient reaches one trunk.
The trunk's parameters live once, under ``backbone.``; a head's state dict holds only its own layers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn

from objmtl.errors import UserError
from objmtl.models.backbones import Backbone

__all__ = ["MultiTaskModel", "SharedLevels", "shared_levels"]


class SharedLevels(nn.Module):
    """A head's backbone: the shared trunk's levels ``out_indices`` (0..3 = C2..C5).

    The trunk is held outside the module tree (it is registered once, on :class:`MultiTaskModel`), so a
    head's parameters and state dict are its own. :meth:`bind` attaches the trunk before the head is built.
    """

    def __init__(self, *, out_indices: Sequence[int]) -> None:
        super().__init__()
        self.out_indices = tuple(int(i) for i in out_indices)
        self._trunk: list[Backbone] = []  # a list keeps the trunk out of this module's children
        self._memo: tuple[Tensor, list[Tensor]] | None = None  # (input, trunk features), see shared_pass

    def bind(self, trunk: Backbone) -> SharedLevels:
        missing = [i for i in self.out_indices if f"c{i + 2}" not in trunk._keys]
        if missing:
            raise UserError(f"a head asks for backbone levels {list(self.out_indices)}; the shared backbone "
                            f"returns {[int(k[1:]) - 2 for k in trunk._keys]}")
        self._trunk = [trunk]
        return self

    @property
    def trunk(self) -> Backbone:
        if not self._trunk:
            raise RuntimeError("SharedLevels used before bind(trunk)")
        return self._trunk[0]

    def _positions(self) -> list[int]:
        keys = list(self.trunk._keys)
        return [keys.index(f"c{i + 2}") for i in self.out_indices]

    @property
    def name(self) -> str:
        return self.trunk.name

    @property
    def out_channels(self) -> list[int]:
        return [self.trunk.out_channels[p] for p in self._positions()]

    @property
    def strides(self) -> list[int]:
        return [self.trunk.strides[p] for p in self._positions()]

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = self._memo[1] if self._memo is not None and self._memo[0] is x else self.trunk(x)
        return [feats[p] for p in self._positions()]


def shared_levels(*, out_indices: Sequence[int] = (0, 1, 2, 3), **_single_task_keys: Any) -> SharedLevels:
    """A head's ``backbone`` node under ``task=mtl``: only ``out_indices`` counts. The single-task model configs
    (``conf/model/*.yaml``) are reused as heads, so their other backbone keys (``name``, ``weights``,
    ``frozen_stages``, ``norm_eval``) arrive here and are ignored: the shared ``model.backbone`` decides them."""
    return SharedLevels(out_indices=out_indices)


class MultiTaskModel(nn.Module):
    """A shared backbone and one head per task type.

    Args:
        backbone: the shared trunk; must return every level a head asks for (``out_indices: [0, 1, 2, 3]``).
        heads: head name (a task kind: ``cls``, ``det``, ``seg``, ``pose``) -> a factory (Hydra ``_partial_``) of the head
            model whose ``backbone`` keyword is a :class:`SharedLevels`.
        active: the heads to build, in order (default: all of ``heads``).
    """

    kind = "mtl"

    def __init__(self, *, backbone: Backbone, heads: dict[str, Callable[..., nn.Module]],
                 active: Sequence[str] | None = None) -> None:
        super().__init__()
        names = list(active) if active is not None else list(heads)
        if not names or len(set(names)) != len(names) or any(n not in heads for n in names):
            raise UserError(f"task.heads={names}: pick one or more of {', '.join(heads)} (model.heads), each once")
        self.backbone = backbone
        built: dict[str, nn.Module] = {}
        for name in names:
            factory = heads[name]
            levels = getattr(factory, "keywords", {}).get("backbone")
            if not isinstance(levels, SharedLevels):
                raise UserError(f"model.heads.{name}.backbone: must be objmtl.models.multitask.shared_levels "
                                "(a view on the shared model.backbone)")
            levels.bind(backbone)
            built[name] = factory()
        self.heads = nn.ModuleDict(built)

    def param_groups(self) -> list[dict[str, Any]]:
        """The trunk's trainable parameters, then each head's groups (a head's own ``param_groups``, such as
        Deformable DETR's ``lr_scale`` ones, are kept)."""
        groups = [{"params": [p for p in self.backbone.parameters() if p.requires_grad]}]
        for head in self.heads.values():
            if hasattr(head, "param_groups"):
                groups.extend(head.param_groups())
            else:
                groups.append({"params": [p for p in head.parameters() if p.requires_grad]})
        return groups

    @property
    def head_names(self) -> list[str]:
        return list(self.heads)

    def head_parameters(self, name: str) -> list[nn.Parameter]:
        """The trainable parameters of one head, without the shared trunk."""
        return [p for p in self.heads[name].parameters() if p.requires_grad]

    @contextmanager
    def shared_pass(self, images: Tensor) -> Iterator[None]:
        """Inside, heads called on ``images`` (the same tensor object) reuse one trunk pass over them."""
        feats = self.backbone(images)
        views = [m for m in self.heads.modules() if isinstance(m, SharedLevels)]
        for view in views:
            view._memo = (images, feats)
        try:
            yield
        finally:
            for view in views:
                view._memo = None

    def forward(self, images: Tensor) -> dict[str, Any]:
        """The whole-image heads (all but those that take person crops: ``takes_crops``, as pose) on
        ``images``, one trunk pass: ``{name: output}``."""
        with self.shared_pass(images):
            return {name: head(images) for name, head in self.heads.items() if not getattr(head, "takes_crops", False)}
