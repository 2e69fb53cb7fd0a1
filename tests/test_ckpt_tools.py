"""objmtl-ckpt on a real (short) run: show, change-key, rename, wash, and refusing unsafe pickles."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from objmtl.checkpoint import load_checkpoint, load_own_weights, state_dict_of
from objmtl.errors import UserError
from objmtl.runs import ckpt_tools
from objmtl.runs.train import train
from tests.helpers import compose_train, run_cli

torch.set_num_threads(2)
FAST = ("data.num_workers=0", "logger=csv", "test_after_fit=false", "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1", "data.batch_size=8", "data.image_size=32")


@pytest.fixture(scope="module")
def run(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("ckpt-run")
    train(compose_train(f"data.root={synth_root}", "trainer.max_epochs=1", *FAST, run_dir=run_dir))
    return run_dir


def test_show_counts_every_parameter(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt_path = run / "checkpoints" / "last.ckpt"
    total = ckpt_tools.show(ckpt_path, depth=2)
    printed = capsys.readouterr().out
    sd = torch.load(ckpt_path, map_location="cpu", weights_only=True)["state_dict"]
    assert total["weights_key"] == "state_dict" and total["tensors"] == len(sd)
    assert total["count"] == sum(t.numel() for t in sd.values())
    assert "model.backbone" in printed and "optimizer_states" in printed and "objmtl config" in printed


def test_wash_drops_state_and_fine_tunes_with_load_from(run: Path, synth_root: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    src = run / "checkpoints" / "last.ckpt"
    ckpt = load_checkpoint(src)
    ckpt["state_dict"]["model.ema.head.weight"] = torch.zeros(3)  # an EMA copy and a loss-only buffer
    ckpt["state_dict"]["model.criterion.pos_weight"] = torch.ones(1)
    torch.save(ckpt, tmp_path / "with_ema.ckpt")

    washed = tmp_path / "washed.pth"
    info = ckpt_tools.wash(tmp_path / "with_ema.ckpt", out=washed, fp16=True)
    assert "size:" in capsys.readouterr().out
    assert sorted(info["dropped_weights"]) == ["model.criterion.pos_weight", "model.ema.head.weight"]
    assert "optimizer_states" in info["dropped_entries"] and info["bytes_after"] < info["bytes_before"]
    out = torch.load(washed, map_location="cpu", weights_only=True)
    assert set(out) == {"model", "objmtl"}
    assert all(not k.startswith("model.") for k in out["model"])
    assert all(t.dtype == torch.float16 for t in out["model"].values() if t.is_floating_point())
    original = state_dict_of(ckpt)
    assert set(out["model"]) == set(original) - {"ema.head.weight", "criterion.pos_weight"}

    summary = train(compose_train(f"data.root={synth_root}", "trainer.max_epochs=1", f"load_from={washed}", *FAST,
                                  run_dir=tmp_path / "finetune"))
    assert (tmp_path / "finetune" / "checkpoints" / "last.ckpt").is_file() and summary["val"]


def test_rename_and_change_key(run: Path, tmp_path: Path) -> None:
    src = run / "checkpoints" / "last.ckpt"
    changes = ckpt_tools.rename(src, pattern=r"^model\.backbone\.", replacement="model.encoder.", dry_run=True)
    assert changes and all(v.startswith("model.encoder.") for v in changes.values())
    assert not (tmp_path / "r.ckpt").exists()
    ckpt_tools.rename(src, pattern=r"^model\.backbone\.", replacement="model.encoder.", out=tmp_path / "r.ckpt")
    renamed = load_checkpoint(tmp_path / "r.ckpt")["state_dict"]
    assert set(changes.values()) <= set(renamed) and not any(k.startswith("model.backbone.") for k in renamed)
    with pytest.raises(UserError, match="would both become"):
        ckpt_tools.rename(src, pattern=r"\.weight$|\.bias$", replacement=".w", dry_run=True)

    ckpt_tools.change_key(src, out=tmp_path / "m.ckpt", src=None, dst="model")
    moved = load_checkpoint(tmp_path / "m.ckpt")
    assert "state_dict" not in moved and ckpt_tools.weights_key(moved) == "model" and "objmtl" in moved
    ckpt_tools.change_key(tmp_path / "m.ckpt", out=tmp_path / "bare.pth", src="model", dst="-")
    bare = load_checkpoint(tmp_path / "bare.pth")
    assert ckpt_tools.weights_key(bare) == "-" and set(bare) == set(moved["model"])
    with pytest.raises(UserError, match="overwrite its input"):
        ckpt_tools.change_key(src, out=src, src=None, dst="model")


class _Evil:
    def __reduce__(self) -> tuple:
        return (print, ("pwned",))


def test_a_malicious_pickle_is_refused_unless_trusted(tmp_path: Path) -> None:
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "payload": _Evil()}, evil)
    result = run_cli("objmtl-ckpt", "show", str(evil))
    assert result.returncode == 2 and "pwned" not in result.stdout
    assert result.stderr.startswith(f"error: {evil}: refused") and "--trust" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    trusted = run_cli("objmtl-ckpt", "show", str(evil), "--trust")
    assert trusted.returncode == 0 and "pwned" in trusted.stdout  # the payload ran: why --trust is opt-in
    with pytest.raises(pickle.UnpicklingError):
        torch.load(evil, weights_only=True)


def test_the_cli_washes_a_run(run: Path, tmp_path: Path) -> None:
    result = run_cli("objmtl-ckpt", "wash", str(run / "checkpoints" / "last.ckpt"), "--out", str(tmp_path / "w.pth"))
    assert result.returncode == 0, result.stderr
    assert "size:" in result.stdout and (tmp_path / "w.pth").is_file()
    missing = run_cli("objmtl-ckpt", "show", str(tmp_path / "nope.ckpt"))
    assert missing.returncode == 2 and missing.stderr.strip() == f"error: {tmp_path / 'nope.ckpt'}: no such run directory or checkpoint"


def test_own_weights_load_strictly_or_say_why_in_one_line():
    """objmtl-test and objmtl-export rebuild a run's model from its stored config and load all its weights."""
    ckpt = {"state_dict": {f"model.{k}": v for k, v in torch.nn.Linear(4, 3).state_dict().items()}}
    fits = torch.nn.Linear(4, 3)
    load_own_weights(fits, ckpt, "run/best.ckpt")
    assert torch.equal(fits.weight, ckpt["state_dict"]["model.weight"])
    with pytest.raises(UserError, match=r"^run/best.ckpt: its weights do not fit its own config's model \(Error"):
        load_own_weights(torch.nn.Linear(4, 5), ckpt, "run/best.ckpt")
