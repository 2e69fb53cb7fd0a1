"""``train(cfg)``: the plain function behind ``objmtl-train`` (tests call it directly)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

import objmtl.config  # noqa: F401  (its import registers the resolvers the config names)
from objmtl.callbacks.ctrl_c import InterruptBetweenSteps
from objmtl.checkpoint import config_from_checkpoint, load_checkpoint, load_weights
from objmtl.cpus import cap_torch_threads
from objmtl.errors import UserError
from objmtl.runs.devices import check_train_devices
from objmtl.runs.interrupted import report_interrupted
from objmtl.runs.overrides import apply_overrides
from objmtl.runs.quiet import quiet_lightning
from objmtl.task_kinds import head_pieces, kind_of, piece
from objmtl.tasks.base import BaseTask

__all__ = ["build_task", "train"]

log = logging.getLogger(__name__)


def _choice(group: str) -> str | None:
    if HydraConfig.initialized():
        return HydraConfig.get().runtime.choices.get(group)
    return None


def _kind(target: str | None) -> str | None:
    """The task type a model class declares (its ``kind``); None for targets that declare none."""
    try:
        return getattr(get_class(target), "kind", None) if target else None
    except Exception:  # noqa: BLE001 - a target that isn't a class (a function) declares no kind
        return None


def _models_for(task: str) -> list[str]:
    """The model configs shipped for a task type, by the ``kind`` of their ``_target_``."""
    from objmtl.config import CONFIG_DIR

    names = []
    for path in sorted((CONFIG_DIR / "model").glob("*.yaml")):
        target = (yaml.safe_load(path.read_text()) or {}).get("_target_")
        if _kind(target) == task:
            names.append(path.stem)
    return names


def _check_task_model(cfg: DictConfig) -> None:
    """A model built for another task type fails here, in one line naming both."""
    target = cfg.model.get("_target_")
    kind, task = _kind(target), cfg.task.name
    check_trainer = getattr(get_class(str(cfg.task.module._target_)), "check_trainer", None)
    if check_trainer is not None:  # the task's own refusals (task=mtl: no sync_batchnorm)
        check_trainer(cfg.trainer)
    if kind is not None and kind != task:
        model = _choice("model") or target
        options = ", ".join(f"model={m}" for m in _models_for(task)) or "none shipped yet"
        raise UserError(f"task={task} does not fit model={model}: that model is a {kind} model; "
                        f"choose a {task} model ({options})")


def _stored_config(cfg: DictConfig, overrides: Sequence[str]) -> tuple[DictConfig, str | None]:
    """For resume / ckpt_path: the config stored with the run, plus this command's overrides."""
    if cfg.get("resume"):
        run = Path(cfg.resume)
        if not (run / "config.yaml").is_file():
            raise UserError(f"resume={run}: not a run directory (it has no config.yaml)")
        ckpt = run / "checkpoints" / "last.ckpt"
        if not ckpt.is_file():
            raise UserError(f"resume={run}: {ckpt} is missing, so there is nothing to resume")
        stored = OmegaConf.load(run / "config.yaml")
        apply_overrides(stored, overrides, why=f"resume={run}")
        stored.resume, stored.paths.output_dir = str(run), str(run)
        return stored, str(ckpt)
    if cfg.get("ckpt_path"):
        stored = OmegaConf.create(config_from_checkpoint(load_checkpoint(cfg.ckpt_path), cfg.ckpt_path))
        apply_overrides(stored, overrides, why=f"ckpt_path={cfg.ckpt_path}")
        stored.ckpt_path, stored.resume = str(cfg.ckpt_path), None
        stored.paths.output_dir = str(cfg.paths.output_dir)
        return stored, str(cfg.ckpt_path)
    return cfg, None


def _materialize_meta(cfg: DictConfig, run_dir: Path) -> DictConfig:
    """The config to store: ``${meta:...}`` replaced by values, the run directory written out.

    Other interpolations stay, so a run restarted elsewhere (``ckpt_path=``) moves its
    checkpoint and log folders along with ``paths.output_dir``.
    """
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
    raw = OmegaConf.to_container(cfg, resolve=False)
    resolved = OmegaConf.to_container(cfg, resolve=True)

    def walk(a: Any, b: Any) -> Any:
        if isinstance(a, dict):
            return {k: walk(v, b[k]) for k, v in a.items()}
        if isinstance(a, list):
            return [walk(x, y) for x, y in zip(a, b, strict=True)]
        return b if isinstance(a, str) and "${meta:" in a else a

    return OmegaConf.create(walk(raw, resolved))


def build_task(cfg: DictConfig, *, for_training: bool = True) -> BaseTask:
    """Model and LightningModule from a config; the config rides along into checkpoints."""
    plain = OmegaConf.to_container(cfg, resolve=False)
    model = instantiate(cfg.model)
    extra: dict[str, Any] = {}
    if for_training:
        extra["optimizer"] = instantiate(cfg.optim)
        extra["scheduler"] = instantiate(cfg.sched) if cfg.get("sched") else None
    task = instantiate(cfg.task.module, model=model, **extra)
    task.run_config = plain  # set after: instantiate would try to build the _target_ nodes inside
    return task


def build_datamodule(cfg: DictConfig) -> Any:
    """The data module of ``cfg.data``, reading samples through the task kind's adapter (``task.kind.samples``;
    a multi-head kind's heads' adapters too)."""
    kind = kind_of(cfg.task)
    return instantiate(cfg.data, samples=piece(kind, "samples"), head_samples=head_pieces(kind, "samples"))


def _instantiate_all(node: DictConfig | None) -> list[Any]:
    return [instantiate(c) for c in (node or {}).values() if isinstance(c, DictConfig) and "_target_" in c]


def _summary(trainer: L.Trainer, run_dir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"run_dir": str(run_dir)}
    ckpt = trainer.checkpoint_callback
    if ckpt is not None and getattr(ckpt, "best_model_path", ""):
        score = ckpt.best_model_score
        out["best"] = {"metric": ckpt.monitor, "value": None if score is None else float(score),
                       "checkpoint": ckpt.best_model_path}
    return out


def train(cfg: DictConfig, *, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Trains (and, unless ``test_after_fit=false``, tests) as ``cfg`` says.

    Returns the summary also written to ``RUN_DIR/metrics.json``: the final validation
    metrics, the best checkpoint and its score, and the test metrics.
    """
    quiet_lightning()
    cap_torch_threads()
    cfg, fit_ckpt = _stored_config(cfg, overrides)
    check_train_devices(cfg.trainer, choice=_choice("trainer"))
    _check_task_model(cfg)
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.get("seed") is not None:
        L.seed_everything(int(cfg.seed), workers=True, verbose=False)

    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()  # writes the synthetic set on first use; meta.json is needed below
    datamodule.read_meta()
    cfg = _materialize_meta(cfg, run_dir)
    if (space := datamodule.label_space()) is not None:
        cfg.label_space = space  # each source's class map, kept with the run and its checkpoints
    if not fit_ckpt or cfg.get("ckpt_path"):
        OmegaConf.save(cfg, run_dir / "config.yaml")
        (run_dir / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))

    task = build_task(cfg)
    if cfg.get("load_from"):
        load_weights(task.model, cfg.load_from)
    callbacks = _instantiate_all(cfg.get("callbacks"))
    if cfg.trainer.get("enable_progress_bar") is False:  # Lightning refuses a bar callback with the bar off
        callbacks = [c for c in callbacks if not isinstance(c, L.pytorch.callbacks.ProgressBar)]
    callbacks.append(InterruptBetweenSteps())
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks,
                                     logger=_instantiate_all(cfg.get("logger")) or False)
    try:
        trainer.fit(task, datamodule=datamodule, ckpt_path=fit_ckpt)
    except SystemExit:  # Lightning's way out of a Ctrl-C, after tearing the run down
        if trainer.interrupted:
            report_interrupted(trainer, run_dir)
        raise
    if trainer.num_training_batches == 0 and trainer.global_step == 0 and cfg.trainer.get("limit_train_batches") != 0:
        raise UserError(f"data.batch_size={cfg.data.get('batch_size')}: no whole training batch for each of the "
                        f"{trainer.world_size} process(es) (batches drop their remainder); lower data.batch_size")

    summary = _summary(trainer, run_dir)
    summary["val"] = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    has_test = datamodule.count("test") > 0
    if cfg.get("test_after_fit") and has_test and not trainer.interrupted:
        best = "best" if summary.get("best") else None
        results = trainer.test(task, datamodule=datamodule, ckpt_path=best, verbose=False)
        summary["test"] = {k: float(v) for k, v in (results[0] if results else {}).items()}
    if trainer.is_global_zero:
        (run_dir / "metrics.json").write_text(json.dumps(summary, indent=1) + "\n")
        _print_where(run_dir, summary, exports=kind_of(cfg.task).get("export") is not None)
    return summary


def _print_where(run_dir: Path, summary: dict[str, Any], *, exports: bool = True) -> None:
    best = summary.get("best") or {}
    lines = [f"run directory:  {run_dir}"]
    if best:
        lines.append(f"best checkpoint: {best['checkpoint']}  ({best['metric']} = {best['value']:.4f})")
    if (run_dir / "checkpoints" / "last.ckpt").is_file():
        lines.append(f"last checkpoint: {run_dir / 'checkpoints' / 'last.ckpt'}")
    lines.append(f"metrics:        {run_dir / 'metrics.json'}")
    lines.append(f"plots:          {run_dir / 'plots'}")
    if best:  # what to do with it (tests run these lines as printed)
        lines.append(f"next:           objmtl-test {run_dir}")
        if exports:  # the task kind has an export piece (conf/kind/<name>.yaml)
            lines.append(f"                objmtl-export onnx {run_dir} --out {run_dir / 'export' / 'model.onnx'} "
                         "--verify")
    for split in ("val", "test"):
        if summary.get(split):
            lines.append(f"{split}: " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(summary[split].items())))
    print("\n".join(lines))
