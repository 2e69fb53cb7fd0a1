"""hparams_search=optuna (hydra-optuna-sweeper) and launcher=slurm (hydra-submitit-launcher)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from objmtl.config import CONFIG_DIR
from tests.helpers import run_cli

TINY = ("data.image_size=32", "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
        "logger=csv", "test_after_fit=false", "data.num_workers=0")


def _hydra_config(*overrides: str):  # noqa: ANN202 - Hydra's composed DictConfig
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def test_slurm_launcher_config_composes_with_the_trainer_size() -> None:
    cfg = _hydra_config("launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2",
                        "hydra.launcher.partition=gpu")
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.nodes, launcher.gpus_per_node, launcher.tasks_per_node) == (2, 4, 4)
    assert launcher.partition == "gpu"


def test_optuna_config_follows_the_task_main_metric_direction() -> None:
    cfg = _hydra_config("hparams_search=optuna")
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper")
    assert cfg.hydra.sweeper.direction == "maximize" and cfg.hydra.mode.name == "MULTIRUN"
    assert "optim.lr" in cfg.hydra.sweeper.params


@pytest.mark.slow
def test_optuna_search_runs_trials_and_reports_the_best(synth_root: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "search"
    result = run_cli("objmtl-train", "hparams_search=optuna", "hydra.sweeper.n_trials=2",
                     "hydra.sweeper.sampler.n_startup_trials=1", f"data.root={synth_root}", *TINY,
                     f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {"optim.lr", "optim.weight_decay"} and 0.0 <= best["best_value"] <= 1.0
    with (sweep / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and float(rows[0]["value"]) == pytest.approx(best["best_value"])
