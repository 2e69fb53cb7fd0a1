"""``objmtl-test`` for a classification run: ``--eval accuracy`` and ``--out`` predictions.

:class:`ClassificationOutputs` keeps, per image, the shard key, the predicted class, its softmax
score and the true class that :class:`~objmtl.tasks.classification.ClassificationTask` returns
from ``validation_step`` / ``test_step``. ``--out`` writes them as a json list (``.json``) or, for
any other suffix, as tab-separated text, one image per line (``key  label  class  score``;
ObjectiveMTL's ``cls_infer_to_txt`` layout, with a header).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from objmtl.data.schema import Meta
from objmtl.runs.outputs import EvalOutputs

__all__ = ["ClassificationOutputs", "write_predictions"]


class ClassificationOutputs(EvalOutputs):
    task = "cls"
    eval_groups = {"accuracy": ("acc", "acc_top5")}
    default_groups = ("accuracy",)

    def collect(self, outputs: Any, batch: dict[str, Any]) -> None:
        if not isinstance(outputs, dict) or "labels" not in outputs:
            return
        keys = batch.get("key") or [""] * len(outputs["labels"])
        for key, label, score, target in zip(keys, outputs["labels"].tolist(), outputs["scores"].tolist(),
                                             batch["label"].tolist(), strict=True):
            self.items.append({"key": key, "label": int(label), "score": float(score), "target": int(target)})

    def write(self, out: Path, *, meta: Meta, class_names: Sequence[str]) -> str:
        return f"predictions: {write_predictions(rows=self.items, class_names=class_names, out=out)}"


def write_predictions(*, rows: Sequence[dict[str, Any]], class_names: Sequence[str], out: str | Path) -> Path:
    """Writes the collected ``rows`` to ``out`` (json list for ``.json``, else tab-separated text)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    named = [{**r, "class": class_names[r["label"]], "score": round(r["score"], 6)} for r in rows]
    if out.suffix.lower() == ".json":
        out.write_text(json.dumps(named, ensure_ascii=False) + "\n", encoding="utf-8")
    else:
        lines = ["key\tlabel\tclass\tscore", *(f"{r['key']}\t{r['label']}\t{r['class']}\t{r['score']:.6f}"
                                                for r in named)]
        out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out
