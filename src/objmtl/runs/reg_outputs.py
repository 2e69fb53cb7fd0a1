"""``objmtl-test`` for an image regression run: ``--out`` values and ``--show-dir`` captions.

:class:`RegressionOutputs` keeps, per image, the shard key, the predicted values and the true ones, in the
source's units (what :class:`~objmtl.tasks.regression.RegressionTask` returns from ``test_step``). ``--out``
writes a CSV (any suffix but ``.json``): a header ``key,<name>,<name>_true,...`` and one row per image, or a
json list of ``{"key", "pred": {name: value}, "true": {name: value}}``. ``--show-dir`` writes each image with
a caption strip ``name predicted (true)``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from objmtl.data.schema import Meta, read_meta
from objmtl.runs.outputs import EvalOutputs, captioned_images
from objmtl.viz.draw import draw_label_text

__all__ = ["RegressionOutputs"]


class RegressionOutputs(EvalOutputs):
    task = "reg"
    out_name = "reg.csv"  # inside a multi-task run's --out DIR
    out_help = "reg: a CSV key,<target>,<target>_true,... (or .json)"

    def collect(self, outputs: Any, batch: dict[str, Any]) -> None:
        if not isinstance(outputs, dict) or "values" not in outputs:
            return
        pred = outputs["values"].detach().float().cpu().numpy()
        true = batch["target"].detach().float().cpu().numpy()
        keys = batch.get("key") or [""] * len(pred)
        for key, p, t in zip(keys, pred, true, strict=True):
            self.items.append({"key": str(key), "pred": p.tolist(), "true": t.tolist()})

    def write(self, out: Path, *, meta: Meta, class_names: Sequence[str]) -> str:
        names = [str(n) for n in meta.field("targets")]
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix.lower() == ".json":
            rows = [{"key": r["key"], "pred": dict(zip(names, r["pred"], strict=True)),
                     "true": dict(zip(names, r["true"], strict=True))} for r in self.items]
            out.write_text(json.dumps(rows) + "\n", encoding="utf-8")
        else:
            with out.open("w", newline="", encoding="utf-8") as f:
                w = csv.writer(f)
                w.writerow(["key", *(c for n in names for c in (n, f"{n}_true"))])
                for r in self.items:
                    w.writerow([r["key"], *(f"{v:.6g}" for p, t in zip(r["pred"], r["true"], strict=True)
                                            for v in (p, t))])
        return f"predictions: {out} ({len(self.items)} images, {', '.join(names)})"

    def show(self, out_dir: Path, *, roots: Sequence[Path], split: str, class_names: Sequence[str],
             score_thr: float, min_side: int = 160) -> int:
        names = [str(n) for n in _meta_targets(roots)]
        out_dir.mkdir(parents=True, exist_ok=True)
        written = 0
        for row, image in captioned_images(self.items, roots, split, min_side=min_side):
            text = "  ".join(f"{n} {p:.3g} ({t:.3g})" for n, p, t in zip(names, row["pred"], row["true"],
                                                                           strict=True))
            Image.fromarray(draw_label_text(image, text)).save(out_dir / f"{Path(row['key']).name}.png")
            written += 1
        return written


def _meta_targets(roots: Sequence[Path]) -> list[str]:
    return list(read_meta(Path(roots[0])).field("targets")) if roots else []
