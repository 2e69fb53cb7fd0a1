"""Bad data at the command line: counted skips, or one line naming the path and the reason."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

from tests.helpers import corrupt_member, run_cli

TINY = ("trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
        "data.batch_size=8", "data.num_workers=1", "logger=csv", "test_after_fit=false")


def _copy_with_corrupt_image(synth_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "shards"
    shutil.copytree(synth_root, root)
    for i in range(0, 32, 3):  # several, so the 2 batches read at least one whichever the shuffle
        corrupt_member(root / "train" / "000000.tar", f"{i:09d}.jpg")
    return root


def test_undecodable_image_is_skipped_and_counted_in_the_epoch_log(synth_root: Path, tmp_path: Path) -> None:
    root = _copy_with_corrupt_image(synth_root, tmp_path)
    run = tmp_path / "run"
    # batches of 12 cover all 84 training samples: no remainder is dropped, every image is read
    args = [a for a in TINY if not a.startswith(("trainer.limit_train", "data.batch_size"))]
    result = run_cli("objmtl-train", f"data.root={root}", "data.batch_size=12", *args, f"hydra.run.dir={run}",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with open(run / "csv" / "metrics.csv") as f:
        skipped = [float(r["data/skipped"]) for r in csv.DictReader(f) if r.get("data/skipped")]
    assert skipped == [11.0]  # every corrupt image of the epoch, counted once
    with open(run / "csv" / "metrics.csv") as f:  # the epoch kept its length, so validation still ran
        assert any(r.get("val/acc") for r in csv.DictReader(f))
    assert "cannot decode" in result.stdout + result.stderr


def test_undecodable_image_can_be_an_error(synth_root: Path, tmp_path: Path) -> None:
    root = _copy_with_corrupt_image(synth_root, tmp_path)
    result = run_cli("objmtl-train", f"data.root={root}", "data.on_decode_error=raise", *TINY,
                     f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith("error: ") and "000000.tar: sample 0000000" in lines[0]
    assert "cannot decode" in lines[0]


def test_shards_without_meta_json(synth_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "shards"
    shutil.copytree(synth_root, root)
    (root / "meta.json").unlink()
    result = run_cli("objmtl-train", f"data.root={root}", *TINY, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: {root / 'meta.json'}: missing; a shard set needs its meta.json "
                                     "(write one with objmtl-data)")


def test_empty_data_set(synth_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "shards"
    shutil.copytree(synth_root, root)
    meta = json.loads((root / "meta.json").read_text())
    meta["splits"]["train"] = []
    (root / "meta.json").write_text(json.dumps(meta))
    result = run_cli("objmtl-train", f"data.root={root}", *TINY, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {root / 'train'}: split 'train' has no samples in meta.json"


def test_objmtl_test_on_a_missing_run(tmp_path: Path) -> None:
    result = run_cli("objmtl-test", str(tmp_path / "nope"))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {tmp_path / 'nope'}: no such run directory or checkpoint"


def test_objmtl_test_refuses_a_pickle_that_is_not_weights(tmp_path: Path) -> None:
    import pickle

    bad = tmp_path / "evil.ckpt"
    bad.write_bytes(pickle.dumps(Path("/")))  # any non-tensor object: weights_only loading must refuse it
    result = run_cli("objmtl-test", str(bad))
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {bad}: ") and "Traceback" not in result.stderr


def test_objmtl_test_on_a_file_that_is_no_checkpoint(tmp_path: Path) -> None:
    text = tmp_path / "notes.ckpt"
    text.write_text("just text")
    result = run_cli("objmtl-test", str(text))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {text}: not a checkpoint (neither torch's zip format nor a pickle)"
