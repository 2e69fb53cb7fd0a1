"""``task=mtl`` samples: each head's view of a sample, for the heads whose annotations the sample carries.

A sample goes to a head when that head's adapter says it carries the head's annotations
(:meth:`~objmtl.data.sample_adapter.SampleAdapter.carried_by`: ``cls`` a ``label``, ``det`` ``boxes`` (an
empty list is an annotated image without objects), ``seg`` a mask or polygons, ``pose`` ``keypoints``), and
only for the kinds its source lends (``data.sources[i].tasks``, see
:class:`~objmtl.data.mixing.MixedDataset`). Each head's adapter (the single-task one, with that head's
transform) makes its item; a batch is ``{head: that head's collated batch}`` for the heads present in it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from objmtl.data.sample_adapter import SampleAdapter
from objmtl.errors import UserError
from objmtl.locations import CONFIG_DIR
from objmtl.task_kinds import builtin_kind, head_pieces

__all__ = ["MultiTaskSamples", "carries"]


def carries(sample: dict[str, Any], head: str, adapter: type[SampleAdapter]) -> bool:
    """Whether ``sample`` holds the annotations ``head`` trains on (its adapter says) and its source lends them."""
    lent = sample.get("kinds")
    if lent is not None and head not in lent:
        return False
    return adapter.carried_by(sample)


class MultiTaskSamples(SampleAdapter):
    """Routes a decoded sample to the adapters of the heads it has annotations for.

    Args:
        transform: head -> its albumentations pipeline (or ``TopDownCrop`` for pose), as in that head's
            single-task data config.
        heads: the heads trained (default: every key of ``transform``); a head missing from
            ``transform`` gets its adapter's default (images scaled to [0, 1]).

    Returns (per sample): ``{"heads": {head: item}, "key": str}``; :meth:`collate` gives
    ``{head: batch}``, ``"samples"``: how many samples the batch holds, and ``"unused"``: how many of them no
    head trains on.
    """

    task = "mtl"

    def __init__(self, *, transform: dict[str, Callable[..., Any]] | None = None,
                 heads: Sequence[str] | None = None, adapters: Mapping[str, type[SampleAdapter]] | None = None) -> None:
        transform = dict(transform or {})
        self.heads = list(heads) if heads is not None else list(transform)
        if adapters is None:  # built by hand: the built-in kinds' adapters (conf/kind/mtl.yaml's heads)
            adapters = head_pieces(builtin_kind("mtl", heads=[h for h in self.heads if _is_builtin(h)]), "samples")
        self.check_heads(self.heads, adapters)
        self.adapters = {h: adapters[h].build(transform=transform.get(h)) for h in self.heads}

    @classmethod
    def build(cls, *, transform: Any, heads: Sequence[str] | None = None,
              parts: Mapping[str, type] | None = None) -> MultiTaskSamples:
        return cls(transform={h: dict(transform or {}).get(h) for h in heads or []}, heads=heads, adapters=parts)

    @classmethod
    def check_heads(cls, heads: Sequence[str] | None, parts: Mapping[str, type] | None) -> None:
        known = list(parts or {})
        if not heads or len(set(heads)) != len(heads) or any(h not in known for h in heads):
            raise UserError(f"task.heads={list(heads or [])}: pick one or more of {', '.join(known)}, each once")

    @classmethod
    def required(cls, heads: Sequence[str] | None) -> dict[str, str]:
        return {h: f"head {h} of task=mtl" for h in heads or []}

    @classmethod
    def eval_views(cls, heads: Sequence[str] | None) -> list[str | None]:
        return list(heads or [])

    def reseed(self, seed: int) -> None:
        for i, adapter in enumerate(self.adapters.values()):
            if hasattr(adapter, "reseed"):
                adapter.reseed(seed + 7919 * i)

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        items = {h: a(sample) for h, a in self.adapters.items() if carries(sample, h, type(a))}
        return {"heads": items, "key": str(sample.get("key", ""))}

    def collate(self, batch: list[dict[str, Any]]) -> dict[str, Any]:  # type: ignore[override]
        """``{head: that head's collated batch}`` for the heads of this adapter present in ``batch``."""
        # samples that carry none of the trained heads' annotations: counted (data/unused_samples), not trained on
        out: dict[str, Any] = {"samples": len(batch), "unused": sum(1 for b in batch if not b["heads"])}
        for head, adapter in self.adapters.items():
            items = [b["heads"][head] for b in batch if head in b["heads"]]
            if items:
                out[head] = adapter.collate(items)
        return out


def _is_builtin(head: str) -> bool:
    return (CONFIG_DIR / "kind" / f"{head}.yaml").is_file()
