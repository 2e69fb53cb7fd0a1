"""Self-supervised pretraining (task=ssl, MoBY): the momentum teacher, k-NN above random init, fine-tuning."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from objmtl.checkpoint import load_checkpoint
from objmtl.metrics.knn import knn_predict
from objmtl.models import build_backbone
from objmtl.models.ssl import MoBY, cosine_momentum
from objmtl.runs.ckpt_tools import wash
from objmtl.runs.train import train
from tests.helpers import compose_train

torch.set_num_threads(2)

# resnet18 on 32-px images, small heads and queue: ~1 s per step of 32 image pairs on 2 loaded CPU cores
SSL = ("task=ssl", "model=moby", "data=ssl", "data.num_workers=0", "logger=csv", "test_after_fit=false", "data.image_size=32",
       "data.batch_size=32", "data.eval_batch_size=128", "model.hidden_dim=512", "model.proj_dim=128",
       "model.queue_size=256", "optim.lr=0.002", "sched.warmup_epochs=1")


def _tiny_moby() -> MoBY:
    return MoBY(backbone=build_backbone(name="resnet18", out_indices=[3], weights=None), proj_dim=16,
                hidden_dim=32, queue_size=8)


def test_cosine_momentum_rises_from_base_to_one() -> None:
    assert cosine_momentum(0.99, 0, 100) == pytest.approx(0.99)
    assert cosine_momentum(0.99, 50, 100) == pytest.approx(0.995)
    assert cosine_momentum(0.99, 100, 100) == pytest.approx(1.0)


def test_teacher_gets_no_gradient_and_follows_the_momentum_rule() -> None:
    torch.manual_seed(0)
    model = _tiny_moby()
    with torch.no_grad():  # make teacher and student differ, so the rule is visible
        for p in model.backbone.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    online = dict(model.backbone.named_parameters())
    before = {k: v.detach().clone() for k, v in model.teacher.backbone.named_parameters()}
    queue = model.teacher.queue2.clone()
    views = torch.randn(2, 4, 3, 32, 32)
    losses = model.loss(views[0], views[1], momentum=0.9)
    losses["loss"].backward()
    for name, t in model.teacher.named_parameters():
        assert not t.requires_grad and t.grad is None, name
    assert all(p.grad is not None for p in model.predictor_head.parameters())
    for name, t in model.teacher.backbone.named_parameters():
        torch.testing.assert_close(t, 0.9 * before[name] + 0.1 * online[name].detach(), msg=name)
    # the 4 new keys of view 2 replaced the oldest 4 queue entries; the rest stayed
    assert model.teacher.queue_ptr.item() == 4
    torch.testing.assert_close(model.teacher.queue2[4:], queue[4:])
    torch.testing.assert_close(model.teacher.queue2[:4].norm(dim=1), torch.ones(4))
    assert not torch.allclose(model.teacher.queue2[:4], queue[:4])


def test_knn_votes_weight_closer_neighbours_more() -> None:
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.1, 1.0]])
    labels = torch.tensor([0, 1, 1])
    # one very close neighbour of class 0 outweighs two distant ones of class 1
    scores = knn_predict(torch.tensor([[1.0, 0.05]]), bank, labels, num_classes=2, k=3, temperature=0.07)
    assert scores.argmax(1).tolist() == [0]
    # with k=2 only the two nearest vote
    scores = knn_predict(torch.tensor([[0.05, 1.0]]), bank, labels, num_classes=2, k=2)
    assert scores[0, 0] == 0 and scores[0, 1] > 0


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """600 synthetic 32-px images: train 420 (the k-NN bank) / val 120 / test 60."""
    from objmtl.data.synth import write_synthetic

    root = tmp_path_factory.mktemp("ssl-synth") / "shards"
    write_synthetic(root, n=600, seed=1, image_size=32, max_count=256)
    return root


@pytest.fixture(scope="module")
def shapes_3000(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """experiment=ssl_moby_synth's synthetic set (3000 images at 32 px): train 2100 (the k-NN bank) / val 600."""
    from objmtl.data.synth import write_synthetic

    root = tmp_path_factory.mktemp("ssl-synth-3000") / "shards"
    write_synthetic(root, n=3000, seed=1, image_size=32, max_count=256)
    return root


@pytest.mark.slow
def test_moby_knn_beats_the_same_backbone_at_random_init(shapes_3000: Path, tmp_path: Path) -> None:
    """experiment=ssl_moby_synth's recipe for 600 MoBY steps (half its schedule's length, one k-NN
    evaluation at the end) against its backbone at random init: k-NN top-1 on 600 val images, the 2100
    training images as the bank, must rise by 4 points or more.

    Random init is the same command with ``optim.lr=0`` for one epoch: the initial weights, with BatchNorm
    statistics of the data (the k-NN reads the running estimates). Measured here (docs/benchmarks.md): 600
    steps read 0.365 / 0.383 / 0.363 for seeds 0 / 1 / 2 against random-init runs of 0.263 to 0.292 (seeds
    0-4), so +7 to +12, and this test's own run 0.283 -> 0.353 on 2026-12-03 (the 600 val images alone give
    ~2 points of noise). The experiment's full 1200 steps gain 12 to 16 points (docs/benchmarks.md); the
    suite cannot afford them (25 min in a full-suite run on a slow day here)."""
    common = ("experiment=ssl_moby_synth", f"data.root={shapes_3000}", "data.num_workers=0", "logger=csv",
              "test_after_fit=false", "trainer.enable_progress_bar=false")
    random_init = train(compose_train(*common, "optim.lr=0", "trainer.max_epochs=1",
                                      "trainer.check_val_every_n_epoch=1", run_dir=tmp_path / "random"))
    trained = train(compose_train(*common, "trainer.max_epochs=30", "trainer.check_val_every_n_epoch=30",
                                  run_dir=tmp_path / "moby"))
    before, after = random_init["val"]["val/knn_top1"], trained["val"]["val/knn_top1"]
    print(f"k-NN top-1: random init {before:.3f}, after 600 MoBY steps {after:.3f}")
    assert after - before >= 0.04, (before, after)


@pytest.mark.slow
def test_moby_run_logs_knn_and_washes_to_a_backbone_that_fine_tunes(
        shapes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = compose_train(*SSL, f"data.root={shapes}", "trainer.max_epochs=2", "trainer.limit_train_batches=3",
                        run_dir=tmp_path / "ssl")
    summary = train(cfg)
    assert summary["best"]["metric"] == "val/knn_top1" and 0.0 <= summary["best"]["value"] <= 1.0, summary
    state = load_checkpoint(Path(summary["best"]["checkpoint"]))["state_dict"]
    last = load_checkpoint(Path(summary["best"]["checkpoint"]).with_name("last.ckpt"))["state_dict"]
    assert last["model.teacher.queue_ptr"].item() == (6 * 32) % 256  # 6 steps of 32 keys enqueued
    # best.ckpt is the epoch with the higher k-NN: 3 or 6 steps in
    assert state["model.teacher.queue_ptr"].item() in ((3 * 32) % 256, (6 * 32) % 256)

    washed = tmp_path / "backbone.pth"
    report = wash(summary["best"]["checkpoint"], out=washed)
    weights = load_checkpoint(washed)["model"]
    assert weights and all(k.startswith("backbone.") for k in weights), sorted(weights)[:5]
    assert len(weights) == sum(k.startswith("model.backbone.") for k in state)
    assert any(k.startswith("model.teacher.queue1") for k in report["dropped_weights"])

    capsys.readouterr()
    train(compose_train(f"data.root={shapes}", f"load_from={washed}", "trainer.max_epochs=1",
                        "trainer.limit_train_batches=1", "trainer.limit_val_batches=1", "data.batch_size=8",
                        "data.image_size=32", "data.num_workers=0", "logger=csv", "test_after_fit=false",
                        run_dir=tmp_path / "cls"))
    out = capsys.readouterr().out
    assert f"loaded {len(weights)} tensors" in out
    assert "missing keys: fc.weight, fc.bias" in out
    assert "unexpected keys" not in out and "mismatched keys" not in out

    # and detection: every backbone tensor fits ATSS; only its neck and head start from scratch
    summary = train(compose_train("task=det", f"data.root={shapes}", f"load_from={washed}", "trainer.max_epochs=1",
                                  "trainer.limit_train_batches=1", "trainer.limit_val_batches=1", "data.batch_size=4",
                                  "data.image_size=64", "data.num_workers=0", "logger=csv", "test_after_fit=false",
                                  run_dir=tmp_path / "det"))
    out = capsys.readouterr().out
    assert f"loaded {len(weights)} tensors" in out and "val/map_50" in summary["val"]
    assert "unexpected keys" not in out and "mismatched keys" not in out
    from objmtl.checkpoint import load_weights
    from objmtl.models.detection import ATSS

    report = load_weights(ATSS(backbone=build_backbone(name="resnet18", out_indices=[1, 2, 3]), num_classes=4), washed)
    assert report["missing"] and all(k.startswith(("neck.", "head.")) for k in report["missing"]), report["missing"]
    assert not report["unexpected"] and not report["mismatched"]
