"""Shared fixtures: small synthetic shards, the real sample data, a trained classifier run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

torch.set_num_threads(2)


@pytest.fixture(scope="session", autouse=True)
def _isolated_dirs(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Generated data and run directories go to temporary folders, never home or the checkout."""
    os.environ["OBJMTL_CACHE"] = str(tmp_path_factory.mktemp("objmtl-cache"))
    os.environ["OBJMTL_RUNS"] = str(tmp_path_factory.mktemp("runs"))
    os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 synthetic 64-px images (train 84 / val 24 / test 12) in shards of 32."""
    from objmtl.data.synth import write_synthetic

    root = tmp_path_factory.mktemp("synth") / "shards"
    write_synthetic(root, n=120, seed=0, image_size=64, max_count=32)
    return root


@pytest.fixture(scope="session")
def reg_synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same 120 images with task kind reg's targets (cover, shapes) in meta.json and every sample."""
    from objmtl.data.reg_synth import write_regression_synthetic

    root = tmp_path_factory.mktemp("reg-synth") / "shards"
    write_regression_synthetic(root, n=120, seed=0, image_size=64, max_count=32)
    return root


@pytest.fixture(scope="session")
def real_data() -> Path:
    """``$OBJMTL_TEST_DATA`` (default ../shared/data): read-only real sample sets.

    Missing data skips locally but fails under CI=true, where it must be present.
    """
    root = Path(os.environ.get("OBJMTL_TEST_DATA", REPO.parent / "shared" / "data"))
    if not (root / "README.md").is_file() and not any(root.glob("*/*")):
        message = f"real sample data not found at {root} (set OBJMTL_TEST_DATA)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return root


@pytest.fixture(scope="session")
def atss_coco128_run(real_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """ATSS-R18 trained from scratch on 8 coco128 images (train = val), 300 steps at 256 px: ~4.5 min.

    Returns ``{"root": shards, "run_dir": ..., "summary": train()'s summary}``.
    """
    from objmtl.runs.train import train
    from tests.helpers import compose_train, eight_coco128_images

    tmp = tmp_path_factory.mktemp("atss-coco128")
    root = eight_coco128_images(real_data, tmp)
    cfg = compose_train("task=det", "model=atss", f"data.root={root}", "data.num_workers=0", "data.batch_size=4",
                        "data.image_size=256", "trainer.max_epochs=150", "trainer.check_val_every_n_epoch=37",
                        "logger=csv", "test_after_fit=false", "optim.lr=0.001", "optim.weight_decay=0.0001",
                        "sched=constant", run_dir=tmp / "run")
    return {"root": root, "run_dir": tmp / "run", "summary": train(cfg)}
