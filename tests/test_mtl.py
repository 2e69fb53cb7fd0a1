"""task=mtl: one backbone, heads of several task types, each trained only on the samples that carry its
annotations; from the CLI on mixed sources, under DDP, and objmtl-test's per-head outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from objmtl.data.mtl_samples import MultiTaskSamples
from objmtl.data.shard_reader import ShardDataset
from objmtl.models.multitask import MultiTaskModel
from objmtl.runs.train import build_task
from tests.helpers import compose_train, run_cli

HEADS = ("cls", "det", "seg", "pose")
SMALL = ("data.image_size=64", "data.pose_size=[64,32]", "model.heads.det.fpn_channels=64",
         "model.heads.seg.fpn_channels=32", "model.heads.seg.head_channels=32", "model.heads.seg.num_groups=8",
         "model.heads.pose.deconv_channels=[32,32,32]")


def _samples(root: Path, n: int) -> list[dict]:
    out = []
    for sample in ShardDataset(root=root, split="train", world_size=1, rank=0):
        if sample["ann"].get("keypoints") is not None and len(sample["ann"].get("boxes") or []):
            out.append(sample)
        if len(out) == n:
            return out
    raise AssertionError("the synthetic set should hold images with persons")


def _head_grads(task: torch.nn.Module, batch: dict) -> dict[str, list[torch.Tensor]]:
    task.zero_grad(set_to_none=True)
    task.training_losses(batch)["loss"].backward()
    model: MultiTaskModel = task.model
    grads = {}
    for head in model.head_names:
        params = model.head_parameters(head)
        assert all(p.grad is not None for p in params), f"head {head}: a parameter left out of the graph"
        grads[head] = [p.grad.clone() for p in params]
    return grads


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.allclose(x, y, rtol=1e-5, atol=1e-7) for x, y in zip(a, b, strict=True))


def test_a_head_gets_no_gradient_from_samples_without_its_annotations(synth_root: Path, tmp_path: Path) -> None:
    cfg = compose_train("task=mtl", f"data.root={synth_root}", *SMALL, run_dir=tmp_path)
    task = build_task(cfg)
    task.eval()  # BatchNorm on running statistics and no dropout: the gradients depend on the batch only
    data = instantiate(cfg.data)
    adapter = MultiTaskSamples(transform={h: data.eval_transform[h] for h in HEADS}, heads=list(HEADS))
    s = _samples(synth_root, 6)

    def batch(*pairs: tuple[dict, str]) -> dict:
        return adapter.collate([adapter({**sample, "kinds": [kind]}) for sample, kind in pairs])

    # each sample lends one kind: swapping the det-only sample changes no other head's gradient
    base = _head_grads(task, batch((s[0], "cls"), (s[1], "det"), (s[2], "seg"), (s[3], "pose")))
    swapped = _head_grads(task, batch((s[0], "cls"), (s[4], "det"), (s[2], "seg"), (s[3], "pose")))
    assert not _same(base["det"], swapped["det"]), "the det head should see its own samples"
    for head in ("cls", "seg", "pose"):
        assert _same(base[head], swapped[head]), f"head {head} got a gradient from a det-only sample"

    # a batch without any det, seg or pose annotation: those heads get exactly zero, and still take part
    only_cls = _head_grads(task, batch((s[0], "cls"), (s[5], "cls")))
    for head in ("det", "seg", "pose"):
        assert all(bool((g == 0).all()) for g in only_cls[head]), f"head {head}: non-zero gradient"
    assert any(bool((g != 0).any()) for g in only_cls["cls"])
    assert task.model.backbone.body.conv1.weight.grad.abs().sum() > 0  # the shared trunk learns from cls


def test_uncertainty_weighting_learns_one_log_variance_per_head(synth_root: Path, tmp_path: Path) -> None:
    cfg = compose_train("task=mtl", "task.heads=[cls,seg]", "task.module.weighting=uncertainty",
                        "task.module.loss_weights={seg: 2.0}", f"data.root={synth_root}", *SMALL, run_dir=tmp_path)
    task = build_task(cfg)
    assert list(task.model.heads) == ["cls", "seg"] and task.log_vars.shape == (2,)
    assert any(task.log_vars is p for g in task._param_groups() for p in g["params"])
    data = instantiate(cfg.data)
    adapter = MultiTaskSamples(transform={h: data.eval_transform[h] for h in ("cls", "seg")}, heads=["cls", "seg"])
    samples = _samples(synth_root, 3)
    batch = adapter.collate([adapter(x) for x in samples[:2]])
    # a sample lending only a kind no head trains on is counted, not trained on
    assert batch["unused"] == 0 and adapter.collate([adapter({**samples[2], "kinds": ["det"]})])["unused"] == 1
    with torch.no_grad():
        task.log_vars.copy_(torch.tensor([0.5, -0.25]))
    losses = task.training_losses(batch)
    expected = (torch.exp(torch.tensor(-0.5)) * losses["loss_cls"] + 0.5
                + torch.exp(torch.tensor(0.25)) * 2.0 * losses["loss_seg"] - 0.25)
    assert torch.allclose(losses["loss"].detach(), expected, rtol=1e-5)
    losses["loss"].backward()
    assert task.log_vars.grad is not None and bool((task.log_vars.grad != 0).all())


@pytest.mark.slow
def test_mtl_trains_on_sources_lending_different_kinds_and_tests_per_head(synth_root: Path,
                                                                            tmp_path: Path) -> None:
    run = tmp_path / "run"
    sources = f"data.sources=[{{root: {synth_root}, tasks: [cls, seg]}}, {{root: {synth_root}, tasks: [det, pose]}}]"
    result = run_cli("objmtl-train", "task=mtl", sources, *SMALL, "debug=fast", "trainer.limit_train_batches=4",
                     "task.module.weighting=uncertainty", "trainer.limit_val_batches=null",
                     "data.batch_size=8", "logger=csv", f"hydra.run.dir={run}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    val = json.loads((run / "metrics.json").read_text())["val"]
    mains = {"cls": "acc", "det": "map_50", "seg": "miou", "pose": "ap"}
    for head, key in mains.items():
        assert f"val/{head}/{key}" in val and f"val/{head}/loss" in val, sorted(val)
    assert val["val/score"] == pytest.approx(sum(val[f"val/{h}/{k}"] for h, k in mains.items()) / 4, abs=1e-6)

    out, show = tmp_path / "out", tmp_path / "show"
    tested = run_cli("objmtl-test", str(run), "--split", "val", "--out", str(out), "--show-dir", str(show),
                     cwd=tmp_path)
    assert tested.returncode == 0, tested.stderr[-3000:]
    n_val = 24  # the fixture's val split, read through both sources: each head sees its lender's copy
    assert len(json.loads((out / "cls.json").read_text())) == n_val
    assert len(list((out / "seg").glob("*.png"))) == n_val
    for name in ("det.json", "pose.json"):  # COCO results (4 steps of training may find nothing to list)
        assert isinstance(json.loads((out / name).read_text()), list)
    for head in HEADS:
        assert len(list((show / head).glob("*.png"))) > 0, head
    metrics = json.loads((run / "eval_val" / "metrics.json").read_text())["metrics"]
    assert metrics["val/score"] == pytest.approx(val["val/score"], abs=1e-6)

    # ONNX: images and person crops in, one output group per head, verified against PyTorch
    onnx_path = tmp_path / "mtl.onnx"
    exported = run_cli("objmtl-export", "onnx", str(run), "--out", str(onnx_path), "--dynamic", "--verify",
                       "--image", str(synth_root), "--triton", str(tmp_path / "triton"), cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert "onnxruntime equals PyTorch" in exported.stdout
    from objmtl.export.metadata import read_metadata

    meta = read_metadata(onnx_path)
    assert meta["heads"] == {"cls": ["OUTPUT__0"], "det": ["OUTPUT__1", "OUTPUT__2", "OUTPUT__3", "OUTPUT__4"],
                             "seg": ["OUTPUT__5"], "pose": ["OUTPUT__6"]}
    assert "max_batch_size: 0" in (tmp_path / "triton" / "mtl" / "config.pbtxt").read_text()  # crops: own count

    # objmtl-predict: the checkpoint and the ONNX file give the same per-head results
    rows = {}
    for name, model in (("ckpt", str(run)), ("onnx", str(onnx_path))):
        done = run_cli("objmtl-predict", model, str(synth_root), "--limit", "4", "--out", str(tmp_path / name),
                       cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        rows[name] = json.loads((tmp_path / name / "predictions.json").read_text())
        assert len(list((tmp_path / name / "pictures" / "det").glob("*.png"))) == 4
    for a, b in zip(rows["ckpt"], rows["onnx"], strict=True):
        assert set(a) == {"image", *HEADS} and a["cls"]["label"] == b["cls"]["label"]
        assert a["cls"]["score"] == pytest.approx(b["cls"]["score"], abs=1e-4)
        assert a["seg"]["classes"] == pytest.approx(b["seg"]["classes"], abs=1e-3)
        assert len(a["det"]["detections"]) == len(b["det"]["detections"])
        for da, db in zip(a["det"]["detections"], b["det"]["detections"], strict=True):
            assert da["label"] == db["label"] and da["box"] == pytest.approx(db["box"], abs=1e-2)
        flat = [[v for kp in r["pose"]["keypoints"] for v in kp] for r in (a, b)]
        assert flat[0] == pytest.approx(flat[1], abs=1e-2)


@pytest.mark.slow
def test_mtl_trains_under_ddp_with_heads_missing_from_a_rank_batch(synth_root: Path, tmp_path: Path) -> None:
    """mix=concat streams the cls-only source before the det+seg one, so most batches hold one head's samples:
    the others must still take part in DDP's gradient reduction (ObjectiveMTL's FAQ 7: an error otherwise)."""
    run = tmp_path / "run"
    sources = f"data.sources=[{{root: {synth_root}, tasks: [cls]}}, {{root: {synth_root}, tasks: [det, seg]}}]"
    result = run_cli("objmtl-train", "task=mtl", "task.heads=[cls,det,seg]", "task.module.weighting=uncertainty",
                     sources, "data.mix=concat", *SMALL, "trainer=ddp_cpu", "trainer.max_epochs=1",
                     "trainer.limit_val_batches=2", "data.batch_size=8", "data.num_workers=0", "logger=csv",
                     "test_after_fit=false", "callbacks.progress_bar.refresh_rate=0", f"hydra.run.dir={run}",
                     cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    val = json.loads((run / "metrics.json").read_text())["val"]
    assert {"val/cls/acc", "val/det/map_50", "val/seg/miou", "val/score"} <= set(val)
    log = next(run.rglob("metrics.csv")).read_text().splitlines()
    header = log[0].split(",")
    assert {"train/cls/loss", "train/det/loss", "train/seg/loss", "train/weight_cls"} <= set(header)
    unused = [float(r[header.index("data/unused_samples")]) for r in (line.split(",") for line in log[1:])
              if r[header.index("data/unused_samples")]]
    assert unused == [0.0]  # every sample of these sources reaches a head

    # DDP evaluation: every rank gathers every head's outputs (the ranks' shares hold different heads); the
    # synthetic images are all one size, so batches pad nothing and one process's metrics are the reference
    metrics = {}
    for devices in ("1", "2"):
        out = tmp_path / f"eval{devices}.json"
        tested = run_cli("objmtl-test", str(run), "--split", "val", "--devices", devices, "--accelerator", "cpu",
                         "--metrics-out", str(out), "--out", str(tmp_path / f"out{devices}"),
                         cwd=tmp_path, timeout=900)
        assert tested.returncode == 0, tested.stderr[-3000:]
        metrics[devices] = json.loads(out.read_text())["metrics"]
    assert metrics["1"].keys() == metrics["2"].keys()
    for key in ("val/cls/acc", "val/seg/miou", "val/det/map_50", "val/score"):
        assert metrics["2"][key] == pytest.approx(metrics["1"][key], abs=1e-5), key
    # the cls head sees the val split of the one source that lends cls, gathered from both ranks
    assert len(json.loads((tmp_path / "out2" / "cls.json").read_text())) == 24


@pytest.mark.parametrize(("overrides", "message"), [
    (("task.heads=[cls,cls]",), "each once"),
    (("task.heads=[cls,depth]",), "pick one or more of"),
    (("trainer.sync_batchnorm=true",), "sync_batchnorm"),
    (("data.sources=[{root: SYNTH, tasks: det}]",), "a list of the annotation kinds"),
    (("data.sources=[{root: SYNTH, tasks: [cls, dets]}]",), "a list of the annotation kinds"),
    (("task.heads=[cls,seg]", "data.sources=[{root: SYNTH, tasks: [cls]}]"), "no source lends seg"),
])
def test_bad_multitask_settings_are_refused_in_one_line(overrides: tuple[str, ...], message: str, synth_root: Path,
                                                         tmp_path: Path) -> None:
    overrides = tuple(o.replace("SYNTH", str(synth_root)) for o in overrides)
    result = run_cli("objmtl-train", "task=mtl", f"data.root={synth_root}", *SMALL, "debug=fast", *overrides,
                     f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode != 0 and message in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
