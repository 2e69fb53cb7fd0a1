"""``objmtl-test`` on a detection run: COCO and VOC metrics, per-class AP, PR curves, pictures, COCO results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from objmtl.runs.det_outputs import EVAL_GROUPS, DetectionOutputs
from tests.helpers import compose_train

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def det_run(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from objmtl.runs.train import train

    run_dir = tmp_path_factory.mktemp("det_run")
    cfg = compose_train("task=det", "debug=fast", f"data.root={synth_root}", "data.batch_size=8",
                        "data.eval_batch_size=8", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1",
                        "trainer.limit_test_batches=1", run_dir=run_dir)
    train(cfg)
    return run_dir


def test_training_writes_pr_curves_and_per_class_ap(det_run: Path) -> None:
    for stage in ("val", "test"):
        assert (det_run / "plots" / f"pr_curves_{stage}.png").is_file()
        rows = json.loads((det_run / f"per_class_ap_{stage}.json").read_text())
        assert rows and {"class_id", "class", "gts", "dets", "ap", "ap50", "recall"} <= set(rows[0])
    metrics = json.loads((det_run / "metrics.json").read_text())
    assert {"val/voc_map", "val/voc_recall", "val/map", "val/mar_100"} <= set(metrics["val"])


def test_objmtl_test_writes_metrics_pictures_and_coco_results(det_run: Path, synth_root: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from objmtl.data.shard_reader import ShardDataset
    from objmtl.runs.evaluate import evaluate

    out, show, results = tmp_path / "m.json", tmp_path / "show", tmp_path / "r.json"
    evaluate(det_run, split="test", metrics_out=out, overrides=["data.num_workers=0"],
             eval_metrics=["map", "recall"], show_dir=show, out=results, show_score_thr=0.0)
    printed = capsys.readouterr().out
    assert "test/voc_map" in printed and "test/voc_recall" in printed
    assert "test/map_75" not in printed  # bbox not asked for: in the json only
    assert "per-class AP" in printed and "circle" in printed

    report = json.loads(out.read_text())
    assert {"test/map", "test/map_50", "test/voc_map", "test/voc_recall"} <= set(report["metrics"])
    assert report["per_class"] and all(0 <= r["ap50"] <= 1 for r in report["per_class"])
    assert (tmp_path / "plots" / "pr_curves_test.png").is_file()

    originals = {int(s["ann"]["image_id"]): s["image"].shape[:2]
                 for s in ShardDataset(root=synth_root, split="test")}
    pngs = sorted(show.glob("*.png"))
    assert sorted(int(p.stem) for p in pngs) == sorted(originals)
    h, w = originals[int(pngs[0].stem)]
    with Image.open(pngs[0]) as im:  # two original-size panels side by side, under a title row
        assert im.width == 2 * w + 4 and im.height > h

    dets = json.loads(results.read_text())
    assert isinstance(dets, list) and dets
    for d in dets:
        assert set(d) == {"image_id", "category_id", "bbox", "score"} and d["image_id"] in originals
        x, y, bw, bh = d["bbox"]
        oh, ow = originals[d["image_id"]]
        assert x >= 0 and y >= 0 and bw >= 0 and bh >= 0
        assert x + bw <= ow + 1e-3 and y + bh <= oh + 1e-3
    assert np.all(np.diff([d["score"] for d in dets if d["image_id"] == dets[0]["image_id"]]) <= 0)


def test_the_cli_passes_the_detection_options_on(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import objmtl.runs.evaluate
    from objmtl.cli.test import main

    calls = []
    monkeypatch.setattr(objmtl.runs.evaluate, "evaluate", lambda source, **kw: calls.append((source, kw)))
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    main(["run", "--eval", "bbox", "map", "recall", "data.num_workers=0", "--show-dir", "d", "--out", "r.json"])
    source, kw = calls[0]
    assert source == Path("run") and kw["eval_metrics"] == ["bbox", "map", "recall"]
    assert kw["overrides"] == ["data.num_workers=0"] and kw["show_score_thr"] == 0.3
    assert kw["show_dir"] == Path("d") and kw["out"] == Path("r.json") and kw["metrics_out"] is None


def test_an_unknown_eval_group_is_a_user_error() -> None:
    from objmtl.errors import UserError
    from objmtl.runs.cls_outputs import ClassificationOutputs

    with pytest.raises(UserError, match="--eval segm: use bbox, map, recall"):
        DetectionOutputs.check_groups(["segm"])
    with pytest.raises(UserError, match="--eval map: use accuracy"):
        ClassificationOutputs.check_groups(["map"])
    DetectionOutputs.check_groups(["map", "bbox"])


def test_eval_groups_select_the_printed_metrics() -> None:
    metrics = {f"test/{k}": 0.5 for keys in EVAL_GROUPS.values() for k in keys} | {"test/loss": 1.0}
    assert set(DetectionOutputs.select(metrics, ["map"])) == {"test/voc_map", "test/loss"}
    assert set(DetectionOutputs.select(metrics, ["bbox", "recall"])) == set(metrics) - {"test/voc_map"}
