"""``evaluate(...)``: the plain function behind ``objmtl-test``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from objmtl.config import register_resolvers
from objmtl.errors import UserError
from objmtl.runs import cls_outputs, det_outputs
from objmtl.runs.checkpoint import config_from_checkpoint, load_checkpoint, state_dict_of
from objmtl.runs.overrides import apply_overrides
from objmtl.runs.quiet import quiet_lightning
from objmtl.runs.train import build_task
from objmtl.tasks.detection import DetectionTask

__all__ = ["evaluate", "find_checkpoint"]


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run directory's best checkpoint (else its last)."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.ckpt", "last.ckpt"):
            if (path / "checkpoints" / name).is_file():
                return path / "checkpoints" / name
        raise UserError(f"{path}: no checkpoints/best.ckpt or checkpoints/last.ckpt in this run directory")
    if not path.exists():
        raise UserError(f"{path}: no such run directory or checkpoint")
    return path


def evaluate(source: str | Path, *, split: str | None = None, data_root: str | Path | None = None,
             out: str | Path | None = None, metrics_out: str | Path | None = None, overrides: Sequence[str] = (),
             accelerator: str = "auto", batch_size: int | None = None, eval_metrics: Sequence[str] | None = None,
             show_dir: str | Path | None = None, show_score_thr: float = 0.3) -> dict[str, float]:
    """Evaluates a run's checkpoint on ``split`` of its data (or of ``data_root``).

    ``split=None`` takes ``test`` when the data has one, else ``val``.

    Metrics are printed and written to ``metrics_out`` (default: ``RUN_DIR/eval_<split>/metrics.json``,
    beside the pictures the task draws). ``out`` gets the predictions, as MMDetection's and
    ObjectiveMTL's ``--out``: for detection a COCO results json (source category ids, original
    pixels; :mod:`objmtl.runs.det_outputs`), for classification a json list or tab-separated text
    by the suffix (:mod:`objmtl.runs.cls_outputs`).

    Detection runs only: ``eval_metrics`` picks the printed groups (``bbox``: COCO AP/AR, the
    default; ``map``: VOC mAP at IoU 0.5; ``recall``: VOC recall), every figure and the per-class
    table still go to ``metrics_out``; ``show_dir`` gets a picture per image (predictions scoring
    >= ``show_score_thr`` beside the ground truth, original size).
    """
    if split not in (None, "val", "test"):
        raise UserError(f"--split {split}: use val or test")
    bad = [e for e in eval_metrics or () if e not in det_outputs.EVAL_GROUPS]
    if bad:
        raise UserError(f"--eval {bad[0]}: use {', '.join(det_outputs.EVAL_GROUPS)}")
    register_resolvers()
    quiet_lightning()
    ckpt_path = find_checkpoint(source)
    ckpt = load_checkpoint(ckpt_path)
    cfg = OmegaConf.create(config_from_checkpoint(ckpt, ckpt_path))
    apply_overrides(cfg, overrides, why="objmtl-test")
    run_dir = ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else ckpt_path.parent
    with open_dict(cfg):
        if data_root is not None:
            cfg.data.root, cfg.data.synth, cfg.data.sources = str(data_root), None, None
        if batch_size:
            cfg.data.eval_batch_size = batch_size

    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    meta = datamodule.read_meta()
    if split is None:
        split = "test" if meta.count(datamodule.splits["test"]) else "val"
    if meta.count(datamodule.splits[split]) == 0:
        other = "val" if split == "test" else "test"
        raise UserError(f"{datamodule.root}: split {split!r} has no samples"
                        + (f" (try --split {other})" if meta.count(datamodule.splits[other]) else ""))
    work = Path(metrics_out).parent if metrics_out else run_dir / f"eval_{split}"
    with open_dict(cfg):
        cfg.paths.output_dir = str(work)
    task = build_task(cfg, for_training=False)
    is_det = isinstance(task, DetectionTask)
    if not is_det and (eval_metrics or show_dir):
        raise UserError("--eval and --show-dir are for detection runs (task=det)")
    task.model.load_state_dict(state_dict_of(ckpt))
    collector: det_outputs.DetectionCollector | cls_outputs.ClassificationCollector | None = None
    if is_det and (show_dir or out):
        collector = det_outputs.DetectionCollector()
    elif out:
        collector = cls_outputs.ClassificationCollector()
    trainer = L.Trainer(accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False,
                        default_root_dir=str(work), enable_model_summary=False,
                        callbacks=[collector] if collector else None)
    run = trainer.validate if split == "val" else trainer.test
    outcome = run(task, datamodule=datamodule, verbose=False)
    metrics = {k: float(v) for k, v in (outcome[0] if outcome else {}).items()}
    report: dict[str, Any] = {"checkpoint": str(ckpt_path), "split": split, "data": str(datamodule.root),
                              "metrics": metrics}
    if is_det:
        report["per_class"] = task.per_class.get(split, [])
    metrics_out = Path(metrics_out) if metrics_out else work / "metrics.json"
    metrics_out.parent.mkdir(parents=True, exist_ok=True)
    metrics_out.write_text(json.dumps(report, indent=1) + "\n")
    shown = det_outputs.select_metrics(metrics, eval_metrics or ("bbox",)) if is_det else metrics
    _print_table(shown, title=f"{ckpt_path} on {datamodule.root} [{split}]")
    if is_det:
        det_outputs.print_per_class(report["per_class"])
    print(f"metrics: {metrics_out}\nplots:   {work / 'plots'}")
    if isinstance(collector, cls_outputs.ClassificationCollector):
        written = cls_outputs.write_predictions(rows=collector.rows, class_names=task.class_names or meta.classes,
                                                out=out)
        print(f"predictions: {written}")
    if isinstance(collector, det_outputs.DetectionCollector) and out:
        written = det_outputs.write_results(images=collector.images, out=out, category_ids=meta.class_ids)
        print(f"results: {written}" + ("" if meta.class_ids else " (category_id = class index of meta.json)"))
    if isinstance(collector, det_outputs.DetectionCollector) and show_dir:
        roots = ([Path(s["root"]).expanduser() for s in datamodule.sources] if datamodule.sources
                 else [datamodule.root])
        n = det_outputs.show_predictions(images=collector.images, roots=roots, split=datamodule.splits[split],
                                         out_dir=show_dir, class_names=task.class_names or meta.classes,
                                         score_thr=show_score_thr)
        print(f"shown:   {n} pictures in {show_dir}")
    return metrics


def _print_table(metrics: dict[str, float], *, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    print(title)
    table = Table()
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in sorted(metrics.items()):
        table.add_row(k, f"{v:.4f}")
    Console(width=120).print(table)
