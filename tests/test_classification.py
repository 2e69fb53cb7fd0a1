"""Classification end to end: accuracy on synthetic data, runs, resume, checkpoints, objmtl-test."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from objmtl.checkpoint import config_from_checkpoint, state_dict_of
from objmtl.data.shard_reader import ShardDataset
from objmtl.runs.train import build_task, train
from tests.helpers import compose_train, run_cli

FAST = ("data.num_workers=0", "logger=csv", "test_after_fit=false")


def _short_run(synth_root: Path, run_dir: Path, *extra: str, epochs: int = 2) -> dict:
    cfg = compose_train(f"data.root={synth_root}", f"trainer.max_epochs={epochs}",
                        "trainer.limit_train_batches=3", "data.batch_size=8", *FAST, *extra, run_dir=run_dir)
    return train(cfg)


@pytest.fixture(scope="session")
def accurate_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """make demo's recipe (40 px, 5 epochs) on the default synthetic set: trained once per session."""
    run_dir = tmp_path_factory.mktemp("cls-run")
    cfg = compose_train("experiment=cls_resnet18_synth", "data.num_workers=1", run_dir=run_dir)
    return run_dir, train(cfg)


@pytest.mark.slow
def test_synthetic_classification_reaches_90_percent(accurate_run: tuple[Path, dict]) -> None:
    run_dir, summary = accurate_run
    assert summary["best"]["value"] >= 0.9, summary
    assert summary["test"]["test/acc"] >= 0.85, summary
    for name in ("config.yaml", "metrics.json", "checkpoints/last.ckpt", "checkpoints/best.ckpt",
                 "csv/metrics.csv", "plots/curves.png", "plots/confusion_val.png", "plots/confusion_test.png"):
        assert (run_dir / name).is_file(), name
    assert any((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert json.loads((run_dir / "metrics.json").read_text())["best"]["metric"] == "val/acc"


@pytest.mark.slow
def test_objmtl_test_reproduces_the_runs_test_metrics(accurate_run: tuple[Path, dict], tmp_path: Path) -> None:
    run_dir, summary = accurate_run
    out, preds = tmp_path / "m.json", tmp_path / "preds.txt"
    result = run_cli("objmtl-test", str(run_dir), "--split", "test", "--metrics-out", str(out), "--out", str(preds),
                     "data.num_workers=0")
    assert result.returncode == 0, result.stderr
    assert "test/acc" in result.stdout
    metrics = json.loads(out.read_text())["metrics"]
    assert metrics["test/acc"] == pytest.approx(summary["test"]["test/acc"], abs=1e-6)
    # --out: one line per test image (key, label, class, score) whose labels give the same accuracy
    header, *lines = preds.read_text().splitlines()
    assert header.split("\t") == ["key", "label", "class", "score"]
    rows = [line.split("\t") for line in lines]
    data_root = json.loads(out.read_text())["data"]
    truth = {s["key"]: s["ann"]["label"] for s in ShardDataset(root=data_root, split="test")}
    assert sorted(r[0] for r in rows) == sorted(truth)
    assert all(0 < float(r[3]) <= 1 for r in rows)
    acc = sum(int(r[1]) == truth[r[0]] for r in rows) / len(rows)
    assert acc == pytest.approx(metrics["test/acc"], abs=1e-6)


def test_checkpoint_alone_rebuilds_the_model(synth_root: Path, tmp_path: Path) -> None:
    _short_run(synth_root, tmp_path, epochs=1)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    cfg = OmegaConf.create(config_from_checkpoint(ckpt))
    task = build_task(cfg, for_training=False)
    task.model.load_state_dict(state_dict_of(ckpt))
    task.eval()
    x = torch.randn(2, 3, 64, 64)
    again = build_task(cfg, for_training=False)
    with torch.no_grad():
        assert not torch.allclose(task(x), again(x))  # fresh init differs, so the load did something
        again.model.load_state_dict(state_dict_of(ckpt))
        again.eval()
        torch.testing.assert_close(task(x), again(x))
    assert cfg.model.num_classes == 4 and list(cfg.task.module.class_names)[0] == "circle"


def _global_step(ckpt: Path) -> tuple[int, int]:
    c = torch.load(ckpt, map_location="cpu", weights_only=True)
    return c["global_step"], c["epoch"]


def test_resume_continues_at_the_right_step(synth_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    _short_run(synth_root, run, epochs=2)
    assert _global_step(run / "checkpoints" / "last.ckpt") == (6, 1)
    lr_before = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["lr_schedulers"][0]
    cfg = compose_train(f"resume={run}", run_dir=tmp_path / "ignored")
    train(cfg, overrides=[f"resume={run}", "trainer.max_epochs=3"])
    assert _global_step(run / "checkpoints" / "last.ckpt") == (9, 2)
    assert not (tmp_path / "ignored").exists() or not any((tmp_path / "ignored").iterdir())
    with open(run / "csv" / "metrics.csv") as f:
        epochs = {int(r["epoch"]) for r in csv.DictReader(f) if r.get("val/acc")}
    assert epochs == {0, 1, 2}
    assert lr_before["last_epoch"] == 6


def test_ckpt_path_starts_a_new_run_with_full_state(synth_root: Path, tmp_path: Path) -> None:
    _short_run(synth_root, tmp_path / "a", epochs=1)
    cfg = compose_train(f"ckpt_path={tmp_path / 'a' / 'checkpoints' / 'last.ckpt'}", run_dir=tmp_path / "b")
    train(cfg, overrides=["trainer.max_epochs=2"])
    assert _global_step(tmp_path / "b" / "checkpoints" / "last.ckpt") == (6, 1)
    assert (tmp_path / "b" / "config.yaml").is_file()


def test_load_from_reports_missing_keys(synth_root: Path, tmp_path: Path, capsys) -> None:
    _short_run(synth_root, tmp_path / "a", epochs=1)
    sd = state_dict_of(torch.load(tmp_path / "a" / "checkpoints" / "last.ckpt", weights_only=True))
    backbone_only = {k: v for k, v in sd.items() if k.startswith("backbone.")}
    torch.save(backbone_only, tmp_path / "backbone.pth")
    capsys.readouterr()
    _short_run(synth_root, tmp_path / "b", f"load_from={tmp_path / 'backbone.pth'}", epochs=1)
    out = capsys.readouterr().out
    assert f"loaded {len(backbone_only)} tensors" in out
    assert "missing keys: fc.weight, fc.bias" in out


def test_seed_and_deterministic_repeat_exactly(synth_root: Path, tmp_path: Path) -> None:
    for name in ("a", "b"):
        _short_run(synth_root, tmp_path / name, "seed=7", "deterministic=true", epochs=1)
    a, b = (state_dict_of(torch.load(tmp_path / n / "checkpoints" / "last.ckpt", weights_only=True))
            for n in ("a", "b"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_last_checkpoint_every_epoch_even_when_validation_is_rarer(synth_root: Path, tmp_path: Path) -> None:
    _short_run(synth_root, tmp_path, "trainer.check_val_every_n_epoch=5", epochs=2)
    assert _global_step(tmp_path / "checkpoints" / "last.ckpt") == (6, 1)


def test_objmtl_test_refuses_unknown_override_keys(synth_root: Path, tmp_path: Path) -> None:
    from objmtl.errors import UserError
    from objmtl.runs.evaluate import evaluate

    _short_run(synth_root, tmp_path, epochs=1)
    with pytest.raises(UserError, match="'data.num_worker' is not a key of the stored config"):
        evaluate(tmp_path, overrides=["data.num_worker=0"])
    metrics = evaluate(tmp_path, overrides=["data.num_workers=0"])  # no --split: the set has a test split
    assert 0 <= metrics["test/acc"] <= 1
