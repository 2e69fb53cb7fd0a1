"""A NaN / infinite training loss: nonfinite_loss=stop ends the run with one line naming the step and the loss
terms; nonfinite_loss=skip skips those steps and counts them."""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from tests.helpers import compose_train, run_cli

torch.set_num_threads(2)

DIVERGE = ("data.image_size=32", "trainer.max_epochs=1", "trainer.limit_train_batches=4", "trainer.limit_val_batches=1",
           "optim=sgd", "optim.lr=1e30", "sched=constant", "logger=csv", "test_after_fit=false", "data.num_workers=0")


def test_stop_names_the_step_and_the_loss_in_one_line(synth_root: Path, tmp_path: Path) -> None:
    result = run_cli("objmtl-train", f"data.root={synth_root}", *DIVERGE, f"hydra.run.dir={tmp_path / 'run'}",
                     cwd=tmp_path)
    assert result.returncode != 0
    lines = [line for line in (result.stdout + result.stderr).splitlines() if "not finite" in line]
    assert len(lines) == 1 and lines[0].startswith("error: step ") and "loss=" in lines[0], lines
    assert "Traceback" not in result.stderr


def test_skip_skips_and_counts_the_steps(synth_root: Path, tmp_path: Path) -> None:
    from objmtl.runs.train import train

    train(compose_train(f"data.root={synth_root}", *DIVERGE, "nonfinite_loss=skip", run_dir=tmp_path))
    with next(tmp_path.glob("csv/**/metrics.csv")).open() as f:
        skipped = [float(r["train/nonfinite_skipped"]) for r in csv.DictReader(f) if r.get("train/nonfinite_skipped")]
    assert skipped and 1 <= skipped[0] <= 3  # the first step is finite and blows the weights up
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] < 4  # skipped steps are not optimizer steps
