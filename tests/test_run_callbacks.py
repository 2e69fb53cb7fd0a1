"""The run callbacks: throughput figures per epoch, EMA weights (callbacks=ema), the sweep summary."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from objmtl.callbacks.throughput import batch_length
from objmtl.runs.sweep_summary import collect_jobs, write_summary
from tests.helpers import compose_train, run_cli

torch.set_num_threads(2)

TINY = ("data.image_size=32", "trainer.max_epochs=2", "trainer.limit_train_batches=3", "trainer.limit_val_batches=1",
        "logger=csv", "test_after_fit=false", "data.num_workers=0")


def _logged(run_dir: Path) -> list[dict[str, str]]:
    with next(run_dir.glob("csv/**/metrics.csv")).open() as f:
        return list(csv.DictReader(f))


def test_throughput_is_logged_each_epoch(synth_root: Path, tmp_path: Path) -> None:
    from objmtl.runs.train import train

    train(compose_train(f"data.root={synth_root}", *TINY, run_dir=tmp_path))
    rows = [r for r in _logged(tmp_path) if r.get("perf/samples_per_sec")]
    assert len(rows) == 2  # one per epoch
    for r in rows:
        assert float(r["perf/samples_per_sec"]) > 0
        assert 0.0 <= float(r["perf/data_wait"]) < 1.0


def test_batch_length_of_each_task_batch() -> None:
    assert batch_length({"image": torch.zeros(3, 3, 8, 8), "label": torch.zeros(3)}) == 3
    assert batch_length({"images": torch.zeros(2, 3, 8, 8), "targets": [{}, {}]}) == 2
    assert batch_length({"targets": [{}, {}, {}, {}]}) == 4
    assert batch_length([torch.zeros(5, 2), torch.zeros(5)]) == 5


def test_ema_validates_and_checkpoints_the_averaged_weights_and_wash_keeps_them(synth_root: Path,
                                                                                  tmp_path: Path) -> None:
    from objmtl.runs.ckpt_tools import wash
    from objmtl.runs.train import train

    run = tmp_path / "run"
    train(compose_train(f"data.root={synth_root}", *TINY, "callbacks=ema", "callbacks.ema.decay=0.5", run_dir=run))
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    ema, raw = ckpt["state_dict"], ckpt["current_model_state"]
    assert set(ema) == set(raw)
    differ = [k for k, v in ema.items() if v.is_floating_point() and not torch.equal(v, raw[k])]
    assert differ, "the averaged weights equal the raw ones: no averaging happened"
    washed = tmp_path / "washed.pth"
    wash(run / "checkpoints" / "last.ckpt", out=washed)
    weights = torch.load(washed, weights_only=True)["model"]
    name = differ[0]
    assert torch.equal(weights[name.removeprefix("model.")], ema[name])


def test_sweep_summary_orders_jobs_by_the_main_metric(tmp_path: Path) -> None:
    for job, (lr, value) in enumerate([("0.1", 0.5), ("0.01", 0.9), ("0.001", None)]):
        d = tmp_path / str(job)
        d.mkdir()
        (d / "overrides.yaml").write_text(f"- optim.lr={lr}\n- seed=0\n")
        best = {"metric": "val/acc", "value": value} if value is not None else None
        (d / "metrics.json").write_text(json.dumps({"best": best}))
    rows = collect_jobs(tmp_path)
    columns = write_summary(rows, out=tmp_path / "summary.csv", mode="max")
    assert columns == ["job", "optim.lr", "metric", "value", "run_dir"]  # seed did not vary
    with (tmp_path / "summary.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [r["optim.lr"] for r in table] == ["0.01", "0.1", "0.001"]
    write_summary(rows, out=tmp_path / "min.csv", mode="min")
    with (tmp_path / "min.csv").open() as f:
        assert [r["optim.lr"] for r in csv.DictReader(f)] == ["0.1", "0.01", "0.001"]


@pytest.mark.slow
def test_multirun_writes_one_run_dir_per_job_and_a_summary(synth_root: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    result = run_cli("objmtl-train", "-m", "optim.lr=0.1,0.01", f"data.root={synth_root}", *TINY,
                     "trainer.max_epochs=1", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    assert all((sweep / j / "checkpoints" / "best.ckpt").is_file() for j in ("0", "1"))
    with (sweep / "summary.csv").open() as f:
        table = list(csv.DictReader(f))
    assert sorted(r["optim.lr"] for r in table) == ["0.01", "0.1"] and all(r["value"] for r in table)
    assert "sweep summary" in result.stdout
