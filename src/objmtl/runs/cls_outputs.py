"""``objmtl-test`` for a classification run: ``--eval accuracy`` and ``--out`` predictions.

:class:`ClassificationOutputs` keeps, per image, the shard key, the predicted class, its softmax
score and the true class that :class:`~objmtl.tasks.classification.ClassificationTask` returns
from ``validation_step`` / ``test_step``. ``--out`` writes them as a json list (``.json``) or, for
any other suffix, as tab-separated text, one image per line (``key  label  class  score``;
ObjectiveMTL's ``cls_infer_to_txt`` layout, with a header). ``--show-dir`` writes each image with a
caption strip: the predicted class and score and, when wrong, the true class (green right, red wrong).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from objmtl.data.schema import Meta
from objmtl.runs.outputs import EvalOutputs, captioned_images
from objmtl.viz.draw import draw_label_text

__all__ = ["ClassificationOutputs", "show_predictions", "write_predictions"]

_RIGHT, _WRONG = (20, 110, 40), (150, 25, 25)


class ClassificationOutputs(EvalOutputs):
    task = "cls"
    out_name = "cls.json"  # inside a multi-task run's --out DIR
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

    def show(self, out_dir: Path, *, roots: Sequence[Path], split: str, class_names: Sequence[str],
             score_thr: float) -> int:
        return show_predictions(rows=self.items, roots=roots, split=split, out_dir=out_dir, class_names=class_names)


def show_predictions(*, rows: Sequence[dict[str, Any]], roots: Sequence[Path], split: str, out_dir: Path,
                     class_names: Sequence[str], min_side: int = 160) -> int:
    """Writes ``out_dir/<key>.png`` per collected image: the original (enlarged to ``min_side`` when
    smaller) over a caption ``predicted score`` (+ ``true: class`` when wrong). Returns the count."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = 0
    for row, image in captioned_images(rows, roots, split, min_side=min_side):
        right = row["label"] == row["target"]
        text = f"{class_names[row['label']]} {row['score']:.2f}" + ("" if right else
                                                                   f"  (true: {class_names[row['target']]})")
        picture = draw_label_text(image, text, background=_RIGHT if right else _WRONG)
        Image.fromarray(picture).save(out_dir / f"{Path(str(row['key'])).name}.png")
        written += 1
    return written


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
