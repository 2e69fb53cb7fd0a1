"""objmtl-test --devices 2 (DDP, gloo on CPU) gives one process's metrics and predictions, for every task type.

The evaluated splits hold an odd number of images, so the two ranks get unequal shares (7 and 6): the
case where torchmetrics' per-image gathering of detection states would hang and Lightning's mean of a
logged loss would round the ranks' batch counts.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from objmtl.runs.evaluate import evaluate
from tests.helpers import SMALL_TASKS, compose_train, run_cli

torch.set_num_threads(2)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def odd_synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic shards whose test split has 13 images."""
    from objmtl.data.synth import write_synthetic

    root = tmp_path_factory.mktemp("odd") / "shards"
    meta = write_synthetic(root, n=130, seed=1, image_size=64, max_count=8)
    assert meta.count("test") == 13
    return root


def _compare(one: Path, two: Path) -> dict[str, float]:
    a, b = (json.loads(p.read_text()) for p in (one, two))
    assert set(a["metrics"]) == set(b["metrics"]) and a["metrics"]
    for key, value in a["metrics"].items():
        # The loss is a mean of batch losses, and a detection batch's loss is normalised by its positives:
        # it depends on how the images fall into batches, which differs with two ranks. Metrics do not.
        tolerance = {"rel": 1e-3} if key.endswith("/loss") else {"abs": 1e-5}  # summation order
        assert b["metrics"][key] == pytest.approx(value, **tolerance), key
    return a["metrics"]


def _ddp_eval(run: Path, tmp_path: Path, *extra: str) -> None:
    result = run_cli("objmtl-test", str(run), "--devices", "2", "--accelerator", "cpu", "--out", str(tmp_path / "p2"),
                     "--metrics-out", str(tmp_path / "m2" / "metrics.json"), *extra, "data.num_workers=0",
                     cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Starting with 2 processes" in result.stdout + result.stderr
    assert result.stdout.count("metrics: ") == 1  # rank 0 alone reports


@pytest.mark.parametrize("task", list(SMALL_TASKS))
def test_two_processes_give_the_metrics_and_predictions_of_one(task: str, odd_synth: Path, tmp_path: Path) -> None:
    from objmtl.runs.train import train

    run = tmp_path / "run"
    train(compose_train(*SMALL_TASKS[task], "debug=fast", f"data.root={odd_synth}", "logger=csv", "test_after_fit=false",
                        run_dir=run))
    evaluate(run, out=tmp_path / "p1", metrics_out=tmp_path / "m1" / "metrics.json", split="test",
             overrides=["data.num_workers=0"])
    _ddp_eval(run, tmp_path, "--split", "test")
    metrics = _compare(tmp_path / "m1" / "metrics.json", tmp_path / "m2" / "metrics.json")
    assert "test/loss" in metrics
    p1, p2 = tmp_path / "p1", tmp_path / "p2"
    if p1.is_dir():  # seg: one PNG per image
        names = sorted(p.name for p in p1.iterdir())
        assert len(names) == 13 and names == sorted(p.name for p in p2.iterdir())
        assert all((p1 / n).read_bytes() == (p2 / n).read_bytes() for n in names)
    else:
        assert p1.read_text() == p2.read_text()


@pytest.mark.realdata
def test_two_processes_give_the_detection_metrics_of_one(atss_coco128_run: dict, tmp_path: Path) -> None:
    """The trained ATSS (real detections) on 7 of its images: COCO and VOC figures, results json.

    At batch size 1: a batch pads its images to one size and the heads' GroupNorm sees the padding, so a
    detector's outputs depend on which images share a batch (rank 0's four here against all seven in one
    process's batch of 8 gave other detections); one image per batch pads each alike either way."""
    from objmtl.data import read_meta
    from objmtl.data.shard_reader import iter_shard
    from objmtl.data.shard_writer import ShardSetWriter

    src = atss_coco128_run["root"]
    meta = read_meta(src)
    root = tmp_path / "seven"
    raws = [raw for shard in meta.splits["val"] for raw in iter_shard(str(src / "val" / shard.file))][:7]
    with ShardSetWriter(root, meta=replace(meta, splits={})) as writer:
        for raw in raws:
            writer.write("val", image=raw["jpg"], ext="jpg", ann=json.loads(raw["json"]))
    run = atss_coco128_run["run_dir"]
    evaluate(run, data_root=root, split="val", out=tmp_path / "p1", metrics_out=tmp_path / "m1" / "metrics.json",
             overrides=["data.num_workers=0"], batch_size=1)
    _ddp_eval(run, tmp_path, "--data", str(root), "--split", "val", "--batch-size", "1")
    metrics = _compare(tmp_path / "m1" / "metrics.json", tmp_path / "m2" / "metrics.json")
    assert metrics["val/map_50"] > 0.5  # a trained detector: the comparison is not of empty outputs
    one, two = (json.loads((tmp_path / p).read_text()) for p in ("p1", "p2"))
    assert len(one) >= 7 * 5 and sorted(one, key=json.dumps) == sorted(two, key=json.dumps)


def test_two_processes_give_the_knn_accuracy_of_one(odd_synth: Path, tmp_path: Path) -> None:
    """task=ssl: each rank reads part of the bank (the training split); the bank is gathered before the vote."""
    from objmtl.runs.train import train

    run = tmp_path / "run"
    train(compose_train("task=ssl", "model=moby", "data=ssl", "debug=fast", f"data.root={odd_synth}", "data.image_size=32", "data.batch_size=8",
                        "model.hidden_dim=64", "model.proj_dim=32", "model.queue_size=64", "logger=csv",
                        "test_after_fit=false", run_dir=run))
    one = evaluate(run, metrics_out=tmp_path / "m1" / "metrics.json", split="test", overrides=["data.num_workers=0"])
    result = run_cli("objmtl-test", str(run), "--devices", "2", "--accelerator", "cpu", "--split", "test",
                     "--metrics-out", str(tmp_path / "m2" / "metrics.json"), "data.num_workers=0", cwd=tmp_path,
                     timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Starting with 2 processes" in result.stdout + result.stderr
    two = json.loads((tmp_path / "m2" / "metrics.json").read_text())["metrics"]
    assert 0 < one["test/knn_top1"] < 1
    from objmtl.errors import UserError

    with pytest.raises(UserError, match="task=ssl writes no predictions"):
        evaluate(run, out=tmp_path / "preds.json")
    assert two["test/knn_top1"] == pytest.approx(one["test/knn_top1"], abs=1e-6), (one, two)
