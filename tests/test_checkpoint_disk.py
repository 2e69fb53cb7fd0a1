"""Disk per run: one full training state (last.ckpt), the best model as weights and config only (best.ckpt),
and a single checkpoint for ``debug=fast`` runs; everything that reads best.ckpt keeps working."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from objmtl.checkpoint import find_checkpoint
from objmtl.errors import UserError
from objmtl.runs.evaluate import evaluate
from objmtl.runs.train import train
from tests.helpers import compose_train

torch.set_num_threads(2)

TINY = ("data.image_size=32", "data.batch_size=8", "data.num_workers=0", "logger=csv",
        "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
        "callbacks.progress_bar.refresh_rate=0")
TRAINING_STATE = ("optimizer_states", "lr_schedulers", "loops", "callbacks", "rng_states")


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_best_is_weights_and_config_only_last_the_full_state(synth_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    summary = train(compose_train(f"data.root={synth_root}", *TINY, run_dir=run))  # test_after_fit: ckpt "best"
    best_path, last_path = run / "checkpoints" / "best.ckpt", run / "checkpoints" / "last.ckpt"
    best, last = _load(best_path), _load(last_path)
    assert all(key in last for key in TRAINING_STATE) and last["optimizer_states"][0]["state"]
    assert not [key for key in TRAINING_STATE if key in best], sorted(best)
    assert best["objmtl"]["config"]["task"]["name"] == "cls" and best["global_step"] == last["global_step"]
    # one epoch: validation (best) and the epoch's end (last) see the same weights
    assert best["state_dict"].keys() == last["state_dict"].keys()
    assert all(torch.equal(v, last["state_dict"][k]) for k, v in best["state_dict"].items())
    assert best_path.stat().st_size < 0.5 * last_path.stat().st_size  # AdamW: two moments per weight

    assert summary["best"]["checkpoint"] == str(best_path) and summary["best"]["value"] is not None
    assert find_checkpoint(run) == best_path
    metrics = evaluate(run, split="test", overrides=["data.num_workers=0"])
    assert metrics["test/acc"] == pytest.approx(summary["test"]["test/acc"], abs=1e-6)

    with pytest.raises(UserError, match="holds weights only"):  # training cannot continue from best.ckpt
        train(compose_train(f"ckpt_path={best_path}", run_dir=tmp_path / "again"))


def test_ema_best_holds_the_average_alone(synth_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(compose_train(f"data.root={synth_root}", *TINY, "trainer.limit_train_batches=3", "callbacks=ema",
                        "callbacks.ema.decay=0.5", "test_after_fit=false", run_dir=run))
    best, last = _load(run / "checkpoints" / "best.ckpt"), _load(run / "checkpoints" / "last.ckpt")
    assert "current_model_state" in last and "current_model_state" not in best and "averaging_state" not in best
    average, raw = last["state_dict"], last["current_model_state"]
    assert any(not torch.equal(v, raw[k]) for k, v in average.items() if v.is_floating_point())
    assert all(torch.equal(v, average[k]) for k, v in best["state_dict"].items())


def test_debug_fast_leaves_one_checkpoint_that_objmtl_test_reads(synth_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    summary = train(compose_train("debug=fast", f"data.root={synth_root}", "data.image_size=32", "logger=csv",
                                  "test_after_fit=false", run_dir=run))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt"]
    assert summary["best"]["value"] is not None
    assert "test/acc" in evaluate(run, overrides=["data.num_workers=0"])
