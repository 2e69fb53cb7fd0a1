"""The ONNX graph of a multi-task model: one output group per head.

Inputs: ``INPUT__0`` images [B, 3, H, W] for the whole-image heads (cls, det, seg), one trunk pass shared by
them; and, when the model has a pose head, ``INPUT__1`` person crops [P, 3, h, w] (``data.pose_size``), since
pose is top-down. Outputs, heads in ``task.heads`` order, each head's group laid out as its single-task
export (:mod:`objmtl.export.graphs`): cls 1 output, det 4 (``--nms onnx``) or 1 (``--nms none``), seg 1,
pose 1; numbered on (``OUTPUT__0``, ``OUTPUT__1``, ...). The file's ``objmtl.heads`` metadata maps each head
to its output names.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from objmtl.export.graphs import ClassifierGraph, DetectorGraph, Normalize, PoseGraph, SegmenterGraph

__all__ = ["MultiTaskGraph", "head_outputs"]


def head_outputs(heads: Sequence[str], *, nms: str) -> dict[str, list[str]]:
    """Head -> its output names, numbered on in head order."""
    counts = {"cls": 1, "det": 4 if nms == "onnx" else 1, "seg": 1, "pose": 1}
    out, i = {}, 0
    for head in heads:
        out[head] = [f"OUTPUT__{j}" for j in range(i, i + counts[head])]
        i += counts[head]
    return out


class MultiTaskGraph(nn.Module):
    """See the module docstring. ``normalize`` applies to ``INPUT__0`` only (pose crops come normalised)."""

    def __init__(self, *, model: nn.Module, normalize: Normalize, nms: str = "onnx",
                 flip_pairs: Sequence[Sequence[int]] | None = None) -> None:
        super().__init__()
        self.model, self.normalize = model, normalize
        self.heads = list(model.heads)
        plain = Normalize()  # the whole-image heads get INPUT__0 normalised once, here
        graphs: dict[str, nn.Module] = {}
        for head in self.heads:
            sub = model.heads[head]
            if head == "cls":
                graphs[head] = ClassifierGraph(model=sub, normalize=plain)
            elif head == "det":
                graphs[head] = DetectorGraph(model=sub, normalize=plain, nms=nms)
            elif head == "seg":
                graphs[head] = SegmenterGraph(model=sub, normalize=plain)
            else:
                graphs[head] = PoseGraph(model=sub, normalize=plain, flip_pairs=flip_pairs)
        self.graphs = nn.ModuleDict(graphs)
        self.names = head_outputs(self.heads, nms=nms)
        self.num_outputs = sum(len(v) for v in self.names.values())
        self.num_inputs = 2 if "pose" in self.heads else 1

    def forward(self, images: Tensor, crops: Tensor | None = None) -> tuple[Tensor, ...]:
        x = self.normalize(images)  # float32: the heads' Normalize() hands this very tensor on
        outputs: list[Tensor] = []
        with self.model.shared_pass(x):
            for head in self.heads:
                if head == "pose":
                    continue
                out = self.graphs[head](x)
                outputs.extend(out if isinstance(out, tuple) else (out,))
        if "pose" in self.heads:
            if crops is None:
                raise ValueError("this model has a pose head: give person crops as the second input")
            at = sum(len(self.names[h]) for h in self.heads[: self.heads.index("pose")])
            outputs.insert(at, self.graphs["pose"](crops))
        return tuple(outputs)
