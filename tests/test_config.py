"""Every config composes and instantiates; config mistakes fail with one clear line."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
from hydra.utils import get_class, instantiate

from objmtl.config import CONFIG_DIR
from objmtl.errors import UserError
from objmtl.runs.train import _check_task_model, build_task
from tests.helpers import compose_train, run_cli

TASKS = sorted(p.stem for p in (CONFIG_DIR / "task").glob("*.yaml"))
MODELS = sorted(p.stem for p in (CONFIG_DIR / "model").glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
TRAINERS = sorted(p.stem for p in (CONFIG_DIR / "trainer").glob("*.yaml"))


def _instantiate_everything(cfg, synth_root: Path) -> None:
    dm = instantiate(cfg.data)
    assert Path(dm.root) == synth_root
    task = build_task(cfg)
    assert isinstance(task, L.LightningModule)
    assert task.model.kind == cfg.task.name
    trainer_cfg = {k: v for k, v in cfg.trainer.items() if k not in ("devices", "strategy", "accelerator")}
    instantiate(trainer_cfg, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False)
    for group in ("callbacks", "logger"):
        for node in (cfg.get(group) or {}).values():
            instantiate(node)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("model", MODELS)
def test_every_task_model_pair(task: str, model: str, synth_root: Path, reg_synth_root: Path,
                               tmp_path: Path) -> None:
    root = reg_synth_root if task == "reg" else synth_root  # a regressor's size comes from meta.json's targets
    cfg = compose_train(f"task={task}", f"model={model}", f"data.root={root}", run_dir=tmp_path)
    kind = getattr(get_class(cfg.model._target_), "kind", None)
    if kind == task:
        _instantiate_everything(cfg, root)
    else:
        with pytest.raises(UserError, match=f"task={task} does not fit"):
            _check_task_model(cfg)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment(experiment: str, reg_synth_root: Path, tmp_path: Path) -> None:
    # the synthetic set with regression targets: the same images and annotations as synth_root's, and targets
    cfg = compose_train(f"experiment={experiment}", f"data.root={reg_synth_root}", run_dir=tmp_path)
    _check_task_model(cfg)
    _instantiate_everything(cfg, reg_synth_root)


@pytest.mark.parametrize("trainer", TRAINERS)
def test_every_trainer_config_composes(trainer: str, tmp_path: Path) -> None:
    cfg = compose_train(f"trainer={trainer}", run_dir=tmp_path)
    assert cfg.trainer._target_ == "lightning.Trainer"
    assert get_class(cfg.trainer._target_) is L.Trainer


def test_misspelled_key_fails_with_hydras_message(tmp_path: Path) -> None:
    result = run_cli("objmtl-train", "trainer.max_epoch=3", cwd=tmp_path, timeout=120)
    assert result.returncode != 0
    assert "max_epoch" in result.stderr and "Traceback" not in result.stderr


def test_misspelled_group_option_fails_with_hydras_message(tmp_path: Path) -> None:
    result = run_cli("objmtl-train", "optim=adamww", cwd=tmp_path, timeout=120)
    assert result.returncode != 0
    assert "adamww" in result.stderr and "Available options" in result.stderr
    assert "Traceback" not in result.stderr


def test_task_model_mismatch_is_one_line(tmp_path: Path) -> None:
    # a stand-in for a detection model, until one exists: any class whose kind is not cls
    result = run_cli("objmtl-train", "model._target_=tests.fake_models.FakeDetector", cwd=tmp_path,
                     timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == ["error: task=cls does not fit model=resnet_cls: that model is a det model; "
                     "choose a cls model (model=resnet_cls)"]


def test_missing_data_root_is_one_line(tmp_path: Path) -> None:
    result = run_cli("objmtl-train", f"data.root={tmp_path / 'nowhere'}", cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {tmp_path / 'nowhere'}: no such shard folder"


def test_task_seg_drops_the_rescale_only_on_the_synthetic_set(tmp_path: Path) -> None:
    """task=seg trains the synthetic shapes without data=seg's random rescale; your shards keep it."""
    def targets(*overrides: str) -> list[str]:
        cfg = compose_train("task=seg", *overrides, run_dir=tmp_path)
        return [t._target_.rsplit(".", 1)[-1] for t in cfg.data.train_transform.transforms]

    assert "RandomScale" not in targets()
    with_rescale = targets("data=seg")
    assert "RandomScale" in with_rescale
    assert [t for t in with_rescale if t != "RandomScale"] == targets()
