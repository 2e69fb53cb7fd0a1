"""The ONNX graph of a multi-task model: one output group per head.

Inputs: ``INPUT__0`` images [B, 3, H, W] for the whole-image heads (cls, det, seg), one trunk pass shared by
them; and, when the model has a head that takes crops (pose: its ``ExportKind.input`` is ``crops``),
``INPUT__1`` person crops [P, 3, h, w] (``data.pose_size``), since pose is top-down. Outputs, heads in ``task.heads`` order, each head's group laid out as its single-task
export (:mod:`objmtl.export.graphs`): cls 1 output, det 4 (``--nms onnx``) or 1 (``--nms none``), seg 1,
pose 1; numbered on (``OUTPUT__0``, ``OUTPUT__1``, ...). The file's ``objmtl.heads`` metadata maps each head
to its output names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor, nn

from objmtl.export.graphs import Normalize

__all__ = ["MultiTaskGraph", "head_outputs"]


def head_outputs(counts: Mapping[str, int]) -> dict[str, list[str]]:
    """Head -> its output names, numbered on in head order (``counts``: head -> how many outputs it gives)."""
    out, i = {}, 0
    for head, n in counts.items():
        out[head] = [f"OUTPUT__{j}" for j in range(i, i + n)]
        i += n
    return out


class MultiTaskGraph(nn.Module):
    """See the module docstring. ``normalize`` applies to ``INPUT__0`` only (crops come normalised).

    Args:
        model: the :class:`~objmtl.models.multitask.MultiTaskModel` (its ``shared_pass`` runs the trunk once).
        normalize: the ``INPUT__0`` normalisation (identity unless baked).
        graphs: each head's graph (its task kind's ``ExportKind.head_graph``), in ``task.heads`` order; those of
            the whole-image heads must take already normalised images.
        counts: head -> how many outputs its graph gives.
        crop_heads: the heads that take person crops (``INPUT__1``); at most one input of crops.
    """

    def __init__(self, *, model: nn.Module, normalize: Normalize, graphs: Mapping[str, nn.Module],
                 counts: Mapping[str, int], crop_heads: Sequence[str] = ()) -> None:
        super().__init__()
        self.model, self.normalize = model, normalize
        self.heads = list(graphs)
        self.graphs = nn.ModuleDict(dict(graphs))
        self.crop_heads = [h for h in self.heads if h in crop_heads]
        self.names = head_outputs({h: int(counts[h]) for h in self.heads})
        self.num_outputs = sum(len(v) for v in self.names.values())
        self.num_inputs = 2 if self.crop_heads else 1

    def forward(self, images: Tensor, crops: Tensor | None = None) -> tuple[Tensor, ...]:
        x = self.normalize(images)  # float32: the heads' Normalize() hands this very tensor on
        per_head: dict[str, tuple[Tensor, ...]] = {}
        with self.model.shared_pass(x):
            for head in self.heads:
                if head not in self.crop_heads:
                    out = self.graphs[head](x)
                    per_head[head] = out if isinstance(out, tuple) else (out,)
        for head in self.crop_heads:
            if crops is None:
                raise ValueError(f"this model has a {head} head, which takes person crops: give them as the "
                                 "second input")
            out = self.graphs[head](crops)
            per_head[head] = out if isinstance(out, tuple) else (out,)
        return tuple(o for head in self.heads for o in per_head[head])
