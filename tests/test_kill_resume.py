"""A training run killed with SIGKILL inside an epoch resumes (resume=RUN_DIR) to the very end of an
uninterrupted run: same steps and epochs, same learning rate, and with deterministic=true the same weights."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from tests.helpers import run_cli

pytestmark = pytest.mark.slow

RUN = ("data.image_size=32", "data.batch_size=8", "data.num_workers=2", "trainer.max_epochs=2", "seed=3",
       "deterministic=true", "checkpoint_every_n_steps=4", "logger=csv", "test_after_fit=false",
       "callbacks.progress_bar.refresh_rate=0")


def _final(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")


def _lr_by_step(run: Path) -> dict[int, float]:
    rows = []
    for f in sorted(run.glob("csv/**/metrics.csv")):
        with f.open() as fh:
            rows += [r for r in csv.DictReader(fh) if r.get("lr-AdamW")]
    return {int(r["step"]): float(r["lr-AdamW"]) for r in rows}


def test_sigkill_mid_epoch_then_resume_ends_like_an_uninterrupted_run(synth_root: Path, tmp_path: Path) -> None:
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    data = f"data.root={synth_root}"
    result = run_cli("objmtl-train", data, *RUN, f"hydra.run.dir={whole}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    steps_per_epoch = _final(whole)["global_step"] // 2
    assert steps_per_epoch >= 8
    kill_at = steps_per_epoch + 5  # inside the second epoch, one step after the checkpoint at a multiple of 4
    kill = ("+callbacks.kill._target_=tests.helpers.KillAtStep", f"+callbacks.kill.step={kill_at}",
            f"+callbacks.kill.marker={tmp_path / 'killed.marker'}")
    result = run_cli("objmtl-train", data, *RUN, *kill, f"hydra.run.dir={killed}", cwd=tmp_path)
    assert result.returncode == -9, f"expected SIGKILL, got {result.returncode}: {result.stderr[-2000:]}"
    at_kill = _final(killed)
    assert at_kill["global_step"] == kill_at // 4 * 4 and at_kill["epoch"] == 1  # saved inside epoch 1
    assert at_kill["ShardDataModule"]["train_batches_done"] == at_kill["global_step"] - steps_per_epoch

    result = run_cli("objmtl-train", f"resume={killed}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = _final(whole), _final(killed)
    assert (b["global_step"], b["epoch"]) == (a["global_step"], a["epoch"])
    lr_a, lr_b = _lr_by_step(whole), _lr_by_step(killed)
    resumed = [s for s in lr_b if s >= at_kill["global_step"]]
    assert resumed and all(lr_b[s] == pytest.approx(lr_a[s], rel=1e-9) for s in resumed)
    assert a["lr_schedulers"][0]["last_epoch"] == b["lr_schedulers"][0]["last_epoch"]
    for name, tensor in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][name], tensor, rtol=0, atol=0, msg=name)
