"""objmtl-export onnx and objmtl-predict: ONNX Runtime equals PyTorch on real images, for trained models.

Detection uses the ATSS run that overfits 8 coco128 images (the session fixture ``atss_coco128_run``):
a random-init detector finds nothing, which would prove nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from objmtl.errors import UserError
from objmtl.export.images import ImageSource
from objmtl.export.metadata import read_metadata
from objmtl.export.pipeline import run_export
from objmtl.export.preprocess import Preprocessor
from objmtl.export.verify import OrtRunner
from objmtl.runs.train import train
from tests.helpers import compose_train, run_cli

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def cls_run(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("cls-export")
    train(compose_train(f"data.root={synth_root}", "trainer.max_epochs=1", "trainer.limit_train_batches=4",
                        "trainer.limit_val_batches=1", "data.batch_size=8", "data.image_size=48", "data.num_workers=0",
                        "logger=csv", "test_after_fit=false", run_dir=run_dir))
    return run_dir


def _triton_schema():  # noqa: ANN202 - a message class built at run time
    """The part of Triton's ModelConfig (model_config.proto) that objmtl writes, as a protobuf message class."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    f = descriptor_pb2.FileDescriptorProto(name="objmtl_test_triton.proto", package="inference", syntax="proto3")
    enum = f.enum_type.add(name="DataType")
    for i, name in enumerate(["TYPE_INVALID", "TYPE_BOOL", "TYPE_UINT8", "TYPE_UINT16", "TYPE_UINT32", "TYPE_UINT64",
                              "TYPE_INT8", "TYPE_INT16", "TYPE_INT32", "TYPE_INT64", "TYPE_FP16", "TYPE_FP32",
                              "TYPE_FP64", "TYPE_STRING", "TYPE_BF16"]):
        enum.value.add(name=name, number=i)
    T = descriptor_pb2.FieldDescriptorProto
    reshape = f.message_type.add(name="Reshape")
    reshape.field.add(name="shape", number=1, type=T.TYPE_INT64, label=T.LABEL_REPEATED)
    tensor = f.message_type.add(name="Tensor")
    tensor.field.add(name="name", number=1, type=T.TYPE_STRING, label=T.LABEL_OPTIONAL)
    tensor.field.add(name="data_type", number=2, type=T.TYPE_ENUM, type_name=".inference.DataType",
                     label=T.LABEL_OPTIONAL)
    tensor.field.add(name="dims", number=4, type=T.TYPE_INT64, label=T.LABEL_REPEATED)
    tensor.field.add(name="reshape", number=5, type=T.TYPE_MESSAGE, type_name=".inference.Reshape",
                     label=T.LABEL_OPTIONAL)
    config = f.message_type.add(name="ModelConfig")
    config.field.add(name="name", number=1, type=T.TYPE_STRING, label=T.LABEL_OPTIONAL)
    config.field.add(name="platform", number=2, type=T.TYPE_STRING, label=T.LABEL_OPTIONAL)
    config.field.add(name="max_batch_size", number=4, type=T.TYPE_INT32, label=T.LABEL_OPTIONAL)
    config.field.add(name="input", number=5, type=T.TYPE_MESSAGE, type_name=".inference.Tensor", label=T.LABEL_REPEATED)
    config.field.add(name="output", number=6, type=T.TYPE_MESSAGE, type_name=".inference.Tensor", label=T.LABEL_REPEATED)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("inference.ModelConfig"))


@pytest.mark.realdata
def test_classifier_export_verifies_on_real_images_and_writes_triton(cls_run: Path, real_data: Path,
                                                                     tmp_path: Path) -> None:
    from google.protobuf import text_format

    images = real_data / "classification" / "hymenoptera_data" / "train" / "ants"
    report = run_export(cls_run / "checkpoints" / "last.ckpt", out=tmp_path / "cls.onnx", dynamic=True,
                        verify_images=True, image=images, triton=tmp_path / "triton", show=tmp_path / "show.png")
    assert report["verify"]["OUTPUT__0"] < 1e-4
    assert (tmp_path / "show.png").stat().st_size > 1000
    meta = read_metadata(tmp_path / "cls.onnx")
    assert meta["task"] == "cls" and meta["class_names"] == ["circle", "square", "triangle", "diamond"]
    assert meta["normalization_baked"] is False and meta["input_size"] == [48, 48]
    config = text_format.Parse(Path(report["triton"]).read_text(), _triton_schema()())
    assert config.platform == "onnxruntime_onnx" and config.max_batch_size == 8
    assert [i.name for i in config.input] == ["INPUT__0"] and list(config.input[0].dims) == [3, -1, -1]
    assert [o.name for o in config.output] == ["OUTPUT__0"] and list(config.output[0].dims) == [4]
    assert (tmp_path / "triton" / "cls" / "1" / "model.onnx").is_file()


def test_baked_uint8_input_gives_the_same_probabilities(cls_run: Path, synth_root: Path, tmp_path: Path) -> None:
    ckpt = cls_run / "checkpoints" / "last.ckpt"
    run_export(ckpt, out=tmp_path / "plain.onnx")
    run_export(ckpt, out=tmp_path / "baked.onnx", bake_norm=True, uint8=True)
    baked = onnx.load(str(tmp_path / "baked.onnx"))
    assert baked.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    rows = {}
    for name in ("plain", "baked"):
        result = run_cli("objmtl-predict", str(tmp_path / f"{name}.onnx"), str(synth_root), "--out",
                         str(tmp_path / name), "--limit", "6", "--no-pictures")
        assert result.returncode == 0, result.stderr
        rows[name] = json.loads((tmp_path / name / "predictions.json").read_text())
    assert [r["label"] for r in rows["plain"]] == [r["label"] for r in rows["baked"]]
    # uint8 rounding of the resized pixels is the only difference
    assert np.allclose([r["score"] for r in rows["plain"]], [r["score"] for r in rows["baked"]], atol=0.02)
    with pytest.raises(UserError, match="--uint8 needs --bake-norm"):
        run_export(ckpt, out=tmp_path / "x.onnx", uint8=True)


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize("nms", ["onnx", "none"])
def test_atss_export_equals_pytorch_on_coco128(atss_coco128_run: dict, tmp_path: Path, nms: str) -> None:
    ckpt = Path(atss_coco128_run["summary"]["best"]["checkpoint"])
    root = atss_coco128_run["root"]
    out = tmp_path / f"atss_{nms}.onnx"
    report = run_export(ckpt, out=out, dynamic=True, nms=nms, verify_images=True, image=root)
    assert all(v < 1e-3 for v in report["verify"].values()), report
    if nms == "none":
        return
    meta = read_metadata(out)
    prep = Preprocessor(eval_transform=meta["eval_transform"], task="det", mean=meta["mean"])
    images = [im for _, im in ImageSource(root, split="val", limit=3)]
    counts = OrtRunner(out)(prep(images).batch)[3]
    assert counts.min() >= 5, counts  # a trained detector: real detections to compare

    # objmtl-predict: the checkpoint in PyTorch and the file in onnxruntime give the same detections
    results = {}
    for name, model in (("torch", ckpt), ("onnx", out)):
        done = run_cli("objmtl-predict", str(model), str(root), "--split", "val", "--limit", "4", "--score-thr", "0.3",
                       "--out", str(tmp_path / name))
        assert done.returncode == 0, done.stderr
        results[name] = json.loads((tmp_path / name / "predictions.json").read_text())
    assert sum(len(r["detections"]) for r in results["onnx"]) >= 4
    for a, b in zip(results["torch"], results["onnx"], strict=True):
        assert [d["label"] for d in a["detections"]] == [d["label"] for d in b["detections"]]
        assert np.allclose([d["box"] for d in a["detections"]], [d["box"] for d in b["detections"]], atol=1e-2)
    assert len(list((tmp_path / "onnx" / "pictures").glob("*.png"))) == 4


def test_predict_and_export_refuse_bad_input_in_one_line(cls_run: Path, tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    from PIL import Image

    Image.new("RGB", (40, 30), (200, 10, 10)).save(folder / "red.png")
    (folder / "notes.jpg").write_text("not an image")
    run_export(cls_run / "checkpoints" / "last.ckpt", out=tmp_path / "m.onnx")
    done = run_cli("objmtl-predict", str(tmp_path / "m.onnx"), str(folder), "--out", str(tmp_path / "p"))
    assert done.returncode == 0, done.stderr
    assert f"skipped: {folder / 'notes.jpg'}: not a readable image" in done.stdout
    assert "predicted 1 images (1 skipped)" in done.stdout

    foreign = tmp_path / "foreign.onnx"  # an ONNX file whose input is not INPUT__0
    model = onnx.load(str(tmp_path / "m.onnx"))
    model.graph.input[0].name = "images"
    for node in model.graph.node:
        node.input[:] = ["images" if i == "INPUT__0" else i for i in node.input]
    onnx.save(model, str(foreign))
    bad = run_cli("objmtl-predict", str(foreign), str(folder), "--out", str(tmp_path / "q"))
    assert bad.returncode == 2 and bad.stderr.strip() == (
        f"error: {foreign}: its input is named 'images', not 'INPUT__0': not an objmtl export")

    truncated = tmp_path / "cut.ckpt"
    truncated.write_bytes((cls_run / "checkpoints" / "last.ckpt").read_bytes()[:5000])
    cut = run_cli("objmtl-export", "onnx", str(truncated), "--out", str(tmp_path / "c.onnx"))
    assert cut.returncode == 2 and cut.stderr.startswith(f"error: {truncated}: not a readable checkpoint")
    assert len(cut.stderr.strip().splitlines()) == 1


@pytest.mark.realdata
@pytest.mark.parametrize(("task", "images"), [("seg", "segmentation/coco128-val-lightly/images/val2017"),
                                              ("pose", "pose/tiny_coco/train2017")])
def test_seg_and_pose_exports_equal_pytorch_on_real_images(task: str, images: str, synth_root: Path, real_data: Path,
                                                           tmp_path: Path) -> None:
    run = tmp_path / "run"
    size = "data.image_size=96" if task == "seg" else "data.image_size=[128,96]"
    train(compose_train(f"task={task}", f"data.root={synth_root}", "trainer.max_epochs=1", "trainer.limit_train_batches=3",
                        "trainer.limit_val_batches=1", "data.batch_size=4", size, "data.num_workers=0", "logger=csv",
                        "test_after_fit=false", run_dir=run))
    out = tmp_path / f"{task}.onnx"
    report = run_export(run / "checkpoints" / "last.ckpt", out=out, dynamic=True, verify_images=True,
                        image=real_data / images, show=tmp_path / "show.png")
    assert report["verify"]["OUTPUT__0"] < 1e-4, report
    assert read_metadata(out)["task"] == task and (tmp_path / "show.png").is_file()
    done = run_cli("objmtl-predict", str(out), str(real_data / images), "--limit", "2", "--out", str(tmp_path / "p"))
    assert done.returncode == 0, done.stderr
    rows = json.loads((tmp_path / "p" / "predictions.json").read_text())
    assert len(rows) == 2
    if task == "seg":
        from PIL import Image

        with Image.open(tmp_path / "p" / "masks" / f"{rows[0]['image']}.png") as mask:
            first = next(iter(ImageSource(real_data / images, limit=1)))[1]
            assert mask.size == (first.shape[1], first.shape[0])
        assert abs(sum(rows[0]["classes"].values()) - 1) < 1e-3
    else:
        assert all(len(r["keypoints"]) == 4 for r in rows)  # the synthetic skeleton's 4 points


def test_fixed_size_exports_pad_non_square_images_and_refuse_other_sizes(tmp_path: Path) -> None:
    from objmtl.export.triton import triton_config

    prep = Preprocessor(eval_transform={"_target_": "albumentations.Compose", "transforms": [
        {"_target_": "albumentations.LongestMaxSize", "max_size": 96}]}, task="det", fixed_size=[96, 96])
    batch = prep([np.zeros((48, 64, 3), np.uint8), np.zeros((80, 40, 3), np.uint8)]).batch
    assert batch.shape == (2, 3, 96, 96)  # a fixed graph gets its own size, not just the next multiple of 32
    with pytest.raises(UserError, match="do not fit|does not fit"):
        Preprocessor(eval_transform={"_target_": "albumentations.Compose", "transforms": []}, task="det",
                     fixed_size=[32, 32])([np.zeros((40, 40, 3), np.uint8)])

    # a per-image scalar output (detection's count) is written as dims [ 1 ] reshaped to a scalar
    x = onnx.helper.make_tensor_value_info("INPUT__0", onnx.TensorProto.FLOAT, ["batch", 3, 8, 8])
    y = onnx.helper.make_tensor_value_info("OUTPUT__0", onnx.TensorProto.FLOAT, ["batch"])
    graph = onnx.helper.make_graph([onnx.helper.make_node("ReduceMean", ["INPUT__0"], ["OUTPUT__0"], axes=[1, 2, 3],
                                                          keepdims=0)], "g", [x], [y])
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), str(tmp_path / "g.onnx"))
    text = triton_config(tmp_path / "g.onnx", name="g")
    assert "dims: [ 1 ]\n    reshape: { shape: [ ] }" in text
    from google.protobuf import text_format

    config = text_format.Parse(text, _triton_schema()())
    assert list(config.output[0].dims) == [1] and config.output[0].HasField("reshape")
