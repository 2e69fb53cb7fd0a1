"""Task kind reg (image regression) as a user meets it: a CSV converted with exact accounts, objmtl-train task=reg
on the synthetic set with no data arguments, objmtl-test --out preds.csv, objmtl-export onnx --verify and
objmtl-predict, all in the source's units."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from objmtl.data import ShardDataset, read_meta
from objmtl.data.convert import run_conversion
from objmtl.data.convert.regression import (
    NO_VALUE,
    NOT_FINITE,
    NOT_NUMBER,
    read_target_csv,
    read_target_lists,
)
from objmtl.errors import UserError
from tests.helpers import run_cli

GOOD = [("a.png", "31", "0.5"), ("b.png", "40", "0.25"), ("c.png", "22.5", "1"), ("d.png", "60", "0"),
        ("e.png", "35", "0.75"), ("f.png", "50", "0.5")]
BAD = [("g.png", "abc", "0.5", NOT_NUMBER), ("h.png", "", "0.5", NO_VALUE), ("i.png", "30", "nan", NOT_FINITE),
       ("j.png", "inf", "1", NOT_FINITE), ("k.png", "33", "", NO_VALUE)]


@pytest.fixture
def csv_source(tmp_path: Path) -> Path:
    """Six good rows, five bad ones (lines 8..12), and a row whose image is missing (line 13)."""
    src = tmp_path / "src"
    (src / "img").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, *_ in GOOD + BAD:
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(src / "img" / name)
    rows = [("img/" + n, a, s) for n, a, s in GOOD] + [("img/" + n, a, s) for n, a, s, _ in BAD]
    with (src / "labels.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "age", "score", "note"])
        w.writerows([(*r, "x") for r in rows])
        w.writerow(["img/missing.png", "20", "0.5", "x"])
    return src


def test_csv_convert_counts_every_dropped_row_and_names_its_line(csv_source: Path, tmp_path: Path) -> None:
    out = tmp_path / "shards"
    result = run_cli("objmtl-data", "convert", "--format", "csv", "--src", str(csv_source), "--ann",
                     "train=labels.csv", "--targets", "age,score", "--val-fraction", "0", "--workers", "1",
                     "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["samples_written"] == {"train": len(GOOD)}
    expected: dict[str, int] = {}
    for *_, reason in BAD:
        expected[reason] = expected.get(reason, 0) + 1
    assert report["dropped"] == expected and report["images_dropped"] == len(BAD)
    assert report["label_files_without_image"] == 1
    for line, (*_, reason) in enumerate(BAD, start=len(GOOD) + 2):  # the header is line 1
        assert f"labels.csv:{line}: {reason}" in result.stderr
    meta = read_meta(out)
    values = np.array([[float(a), float(s)] for _, a, s in GOOD])
    assert meta.tasks == ["reg"] and meta.extra["targets"] == ["age", "score"]
    np.testing.assert_allclose(meta.extra["target_mean"], values.mean(0), atol=1e-6)
    np.testing.assert_allclose(meta.extra["target_std"], values.std(0), atol=1e-6)
    written = sorted(tuple(s["ann"]["targets"]) for s in ShardDataset(root=out, split="train"))
    assert written == sorted(map(tuple, values.tolist()))
    assert "objmtl-train task=reg data=reg_shards data.root=" in result.stdout

    strict = run_cli("objmtl-data", "convert", "--format", "csv", "--src", str(csv_source), "--ann",
                     "train=labels.csv", "--targets", "age", "--strict", "--workers", "1", "--out", str(tmp_path / "s"))
    assert strict.returncode != 0 and "Traceback" not in strict.stderr
    assert f"labels.csv:{len(GOOD) + 2}: {NOT_NUMBER}" in strict.stderr  # age 'abc' is the first bad age


def test_csv_and_list_readers_refuse_what_they_cannot_read(csv_source: Path, tmp_path: Path) -> None:
    table = {"train": csv_source / "labels.csv"}
    with pytest.raises(UserError, match=r"labels.csv:1: no column weight in the header path, age, score, note"):
        read_target_csv(csv_source, tables=table, targets=["weight"])
    with pytest.raises(UserError, match="no path column 'file'"):
        read_target_csv(csv_source, tables=table, targets=["age"], path_column="file")
    # without --targets, every column but the path: 'note' is never a number, so every row drops
    with pytest.raises(UserError, match="no row of the csv files has valid targets"):
        read_target_csv(csv_source, tables=table)
    lines = csv_source / "train.txt"
    lines.write_text("img/a.png 3 4\nimg/b.png 5\nimg/c.png 6 7\n")
    conv = read_target_lists(csv_source, lists={"train": lines}, targets=["w", "h"], val_fraction=0)
    report = run_conversion(conv, tmp_path / "list", workers=1, progress=False)
    assert report.samples_written == {"train": 2} and report.to_dict()["dropped"] == {"wrong number of target values": 1}
    assert read_meta(tmp_path / "list").extra["target_mean"] == [4.5, 5.5]


@pytest.mark.slow
def test_reg_trains_tests_exports_and_predicts_from_the_cli(reg_synth_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    # no data arguments: data=reg_synth writes its set to the cache (a small one here, to keep the test short)
    train = run_cli("objmtl-train", "task=reg", "debug=fast", "data.synth.n=120", "data.synth.image_size=64",
                    "data.num_workers=0", "logger=csv", f"hydra.run.dir={run}", cwd=tmp_path)
    assert train.returncode == 0, train.stderr[-3000:]
    assert "val/r2" in train.stdout and (run / "checkpoints" / "best.ckpt").is_file()
    assert {"scatter_val.png", "residuals_val.png"} <= {p.name for p in (run / "plots").glob("*.png")}

    test = run_cli("objmtl-test", str(run), "--split", "test", "--out", "preds.csv", "--show-dir", "shown",
                   "data.num_workers=0", cwd=tmp_path)
    assert test.returncode == 0, test.stderr[-3000:]
    assert all(f"test/{m}" in test.stdout for m in ("mae", "rmse", "r2", "pearson"))
    with (tmp_path / "preds.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["key", "cover", "cover_true", "shapes", "shapes_true"]
    truth = {s["key"]: s["ann"]["targets"] for s in ShardDataset(root=reg_synth_root, split="test")}
    assert len(rows) == len(truth) == len(list((tmp_path / "shown").glob("*.png")))
    for row in rows:  # the same images as the fixture's set: the true values are the shards' own, in source units
        np.testing.assert_allclose([float(row["cover_true"]), float(row["shapes_true"])], truth[row["key"]],
                                   rtol=1e-5)

    onnx = tmp_path / "model.onnx"
    export = run_cli("objmtl-export", "onnx", str(run), "--out", str(onnx), "--verify", cwd=tmp_path)
    assert export.returncode == 0, export.stderr[-3000:]
    assert "onnxruntime equals PyTorch" in export.stdout
    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["objmtl.target_names"]) == ["cover", "shapes"]
    (out,) = session.run(None, {session.get_inputs()[0].name: np.zeros((3, 3, 64, 64), np.float32)})
    assert out.shape == (3, 2)

    predict = run_cli("objmtl-predict", str(onnx), str(reg_synth_root), "--limit", "4", "--out", "pred", cwd=tmp_path)
    assert predict.returncode == 0, predict.stderr[-3000:]
    results = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert len(results) == 4 and all(set(r["values"]) == {"cover", "shapes"} for r in results)
    # the same model on the same test images: objmtl-predict's values (ONNX, source units) are objmtl-test's
    tested = np.array([[float(r["cover"]), float(r["shapes"])] for r in rows])
    for r in results:
        value = np.array([r["values"]["cover"], r["values"]["shapes"]])
        assert np.abs(tested - value).max(1).min() < 1e-4, f"{r} is no row of objmtl-test's preds.csv"


@pytest.mark.slow
def test_reg_is_a_head_of_task_mtl(reg_synth_root: Path, tmp_path: Path) -> None:
    """experiment=mtl_reg: the reg head beside cls on one backbone, through objmtl-test, ONNX and predict."""
    run, out, onnx = tmp_path / "run", tmp_path / "out", tmp_path / "mtl.onnx"
    train = run_cli("objmtl-train", "experiment=mtl_reg", "task.heads=[cls,reg]", f"data.root={reg_synth_root}",
                    "debug=fast", "logger=csv", f"hydra.run.dir={run}", cwd=tmp_path)
    assert train.returncode == 0, train.stderr[-3000:]
    val = json.loads((run / "metrics.json").read_text())["val"]
    assert val["val/score"] == pytest.approx((val["val/cls/acc"] + val["val/reg/r2"]) / 2, abs=1e-6)
    assert {"val/reg/mae_cover", "val/reg/pearson_shapes"} <= set(val)

    test = run_cli("objmtl-test", str(run), "--split", "test", "--out", str(out), cwd=tmp_path)
    assert test.returncode == 0, test.stderr[-3000:]
    with (out / "reg.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(json.loads((out / "cls.json").read_text())) == 12  # the fixture's test split

    export = run_cli("objmtl-export", "onnx", str(run), "--out", str(onnx), "--verify", cwd=tmp_path)
    assert export.returncode == 0 and "onnxruntime equals PyTorch" in export.stdout, export.stderr[-3000:]
    from objmtl.export.metadata import read_metadata

    meta = read_metadata(onnx)
    assert meta["heads"] == {"cls": ["OUTPUT__0"], "reg": ["OUTPUT__1"]}
    assert meta["target_names"] == ["cover", "shapes"]

    predict = run_cli("objmtl-predict", str(onnx), str(reg_synth_root), "--limit", "4", "--out", "pred", cwd=tmp_path)
    assert predict.returncode == 0, predict.stderr[-3000:]
    tested = np.array([[float(r["cover"]), float(r["shapes"])] for r in rows])
    for r in json.loads((tmp_path / "pred" / "predictions.json").read_text()):
        value = np.array([r["reg"]["values"]["cover"], r["reg"]["values"]["shapes"]])
        assert np.abs(tested - value).max(1).min() < 1e-4, f"{r} is no row of objmtl-test's reg.csv"
