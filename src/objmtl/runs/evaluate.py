"""``evaluate(...)``: the plain function behind ``objmtl-test``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import OmegaConf, open_dict

import objmtl.config  # noqa: F401  (its import registers the resolvers the config names)
from objmtl.callbacks.ctrl_c import InterruptBetweenSteps
from objmtl.checkpoint import config_from_checkpoint, find_checkpoint, load_checkpoint, load_own_weights
from objmtl.cpus import cap_torch_threads
from objmtl.errors import UserError
from objmtl.runs.devices import check_eval_devices
from objmtl.runs.overrides import apply_overrides
from objmtl.runs.quiet import quiet_lightning
from objmtl.runs.train import build_datamodule, build_task
from objmtl.task_kinds import head_pieces, kind_of, piece

__all__ = ["evaluate"]


def evaluate(source: str | Path, *, split: str | None = None, data_root: str | Path | None = None,
             out: str | Path | None = None, metrics_out: str | Path | None = None, overrides: Sequence[str] = (),
             accelerator: str = "auto", batch_size: int | None = None, eval_metrics: Sequence[str] | None = None,
             show_dir: str | Path | None = None, show_score_thr: float = 0.3, fuse_conv_bn: bool = False,
             format_only: bool = False, trust: bool = False, devices: int = 1) -> dict[str, float]:
    """Evaluates a run's checkpoint on ``split`` of its data (or of ``data_root``).

    ``split=None`` takes ``test`` when the data has one, else ``val``.

    Metrics are printed and written to ``metrics_out`` (default: ``RUN_DIR/eval_<split>/metrics.json``,
    beside the pictures the task draws). ``out`` gets the predictions, as MMDetection's and
    ObjectiveMTL's ``--out``: for detection a COCO results json (source category ids, original
    pixels; :mod:`objmtl.runs.det_outputs`), for classification a json list or tab-separated text
    by the suffix (:mod:`objmtl.runs.cls_outputs`); each task type's
    :class:`~objmtl.runs.outputs.EvalOutputs` does it.

    ``eval_metrics`` picks the printed groups (detection: ``bbox``: COCO AP/AR, the default;
    ``map``: VOC mAP at IoU 0.5; ``recall``: VOC recall; classification: ``accuracy``), every
    figure still goes to ``metrics_out``; ``show_dir`` gets a picture per image (detection:
    predictions scoring >= ``show_score_thr`` beside the ground truth, original size).

    ``fuse_conv_bn`` folds BatchNorm layers into their convolutions first (:mod:`objmtl.runs.fuse`);
    ``format_only`` writes ``out`` without printing or saving metrics (data without annotations).

    ``devices > 1`` evaluates under DDP (Lightning re-runs the command once per extra process, gloo on
    CPU): each rank reads a contiguous share of the split, the metrics gather every rank's state and
    rank 0 gathers the predictions, prints and writes; the other ranks return their (same) metrics
    and write nothing. The metrics and predictions equal one process's when the images fall into the
    same batches (``batch_size=1`` always, or images of one size): a batch pads its images to one size,
    and a detector's GroupNorm sees the padding, so its outputs depend on which images share a batch;
    ``loss`` is a mean of batch losses (detection normalises by a batch's positives).
    """
    _check_arguments(split=split, out=out, format_only=format_only, devices=devices, accelerator=accelerator)
    quiet_lightning()
    cap_torch_threads()
    ckpt_path = find_checkpoint(source)
    ckpt = load_checkpoint(ckpt_path, trust=trust)
    cfg = OmegaConf.create(config_from_checkpoint(ckpt, ckpt_path))
    apply_overrides(cfg, overrides, why="objmtl-test")
    kind = kind_of(cfg.task)
    outputs_cls = piece(kind, "outputs")
    outputs_cls.check_groups(eval_metrics)
    outputs_cls.check_request(files=bool(out or show_dir))
    run_dir = ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else ckpt_path.parent
    with open_dict(cfg):
        if data_root is not None:
            cfg.data.root, cfg.data.synth, cfg.data.sources = str(data_root), None, None
        if batch_size:
            cfg.data.eval_batch_size = batch_size

    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    meta = datamodule.read_meta()
    split = _pick_split(datamodule, split)
    work = Path(metrics_out).parent if metrics_out else run_dir / f"eval_{split}"
    with open_dict(cfg):
        cfg.paths.output_dir = str(work)
    task = build_task(cfg, for_training=False)
    load_own_weights(task.model, ckpt, ckpt_path)
    outputs = outputs_cls(keep=bool(out or show_dir), parts=head_pieces(kind, "outputs"))
    trainer, metrics = _run(task, datamodule, split=split, work=work, outputs=outputs, accelerator=accelerator,
                            devices=devices, fuse_conv_bn=fuse_conv_bn)
    if not trainer.is_global_zero:
        return metrics
    report: dict[str, Any] = {"checkpoint": str(ckpt_path), "split": split, "data": str(datamodule.root),
                              "metrics": metrics, **outputs.report(task, split)}
    if not format_only:
        metrics_out = Path(metrics_out) if metrics_out else work / "metrics.json"
        metrics_out.parent.mkdir(parents=True, exist_ok=True)
        metrics_out.write_text(json.dumps(report, indent=1) + "\n")
        _print_table(outputs.select(metrics, eval_metrics), title=f"{ckpt_path} on {datamodule.root} [{split}]")
        outputs.print_report(report)
        print(f"metrics: {metrics_out}\nplots:   {work / 'plots'}")
    class_names = getattr(task, "class_names", None) or meta.classes
    if out:
        print(outputs.write(Path(out), meta=meta, class_names=class_names))
    if show_dir:
        roots = ([Path(s["root"]).expanduser() for s in datamodule.sources] if datamodule.sources
                 else [datamodule.root])
        n = outputs.show(Path(show_dir), roots=roots, split=datamodule.splits[split], class_names=class_names,
                         score_thr=show_score_thr)
        print(f"shown:   {n} pictures in {show_dir}")
    return metrics


def _check_arguments(*, split: str | None, out: str | Path | None, format_only: bool, devices: int,
                     accelerator: str) -> None:
    """The checks that need no checkpoint: one UserError line each."""
    if split not in (None, "val", "test"):
        raise UserError(f"--split {split}: use val or test")
    if format_only and not out:
        raise UserError("--format-only writes the predictions only: give --out")
    if devices < 1:
        raise UserError(f"--devices {devices}: give 1 or more")
    check_eval_devices(accelerator=accelerator, devices=devices)


def _pick_split(datamodule: Any, split: str | None) -> str:
    """``split``, or ``test`` when the data has one and ``val`` when not; a split without samples is an error."""
    count = datamodule.count
    if split is None:
        split = "test" if count("test") else "val"
    if count(split) == 0:
        other = "val" if split == "test" else "test"
        raise UserError(f"{datamodule.root}: split {split!r} has no samples"
                        + (f" (try --split {other})" if count(other) else ""))
    return split


def _run(task: Any, datamodule: Any, *, split: str, work: Path, outputs: Any, accelerator: str, devices: int,
         fuse_conv_bn: bool) -> tuple[L.Trainer, dict[str, float]]:
    """The Lightning validate / test run: the trainer and the metrics (one dict per loader, merged)."""
    fused = None
    if fuse_conv_bn:
        from objmtl.runs.fuse import fuse_conv_bn as fuse

        fused = fuse(task.model)
    trainer = L.Trainer(accelerator=accelerator, devices=devices, strategy="ddp" if devices > 1 else "auto",
                        logger=False, enable_checkpointing=False, default_root_dir=str(work),
                        enable_model_summary=False, callbacks=[outputs, InterruptBetweenSteps()])
    if fused is not None and trainer.is_global_zero:
        print(f"fused {fused} conv + BatchNorm pairs")
    run = trainer.validate if split == "val" else trainer.test
    try:
        outcome = run(task, datamodule=datamodule, verbose=False)
    except SystemExit:  # Lightning's way out of a Ctrl-C
        if trainer.interrupted:
            raise KeyboardInterrupt from None  # the command says "interrupted" in one line, exit 130
        raise
    # one dict per evaluation loader (task=mtl has one per head); epoch-level metrics are in each
    return trainer, {k: float(v) for per_loader in outcome or [] for k, v in per_loader.items()}


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
