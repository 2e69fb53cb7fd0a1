"""Composing the real config tree in tests, with tiny limits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from omegaconf import DictConfig

from objmtl.config import compose_config, register_resolvers

register_resolvers()

# each task type's default model, made small for a few CPU steps on the synthetic fixtures
SMALL_TASKS = {
    "cls": ("task=cls", "data.image_size=48"),
    "det": ("task=det", "data.image_size=64", "data.batch_size=4"),
    "seg": ("task=seg", "model=fpn_seg", "data.image_size=64", "data.batch_size=4"),
    "pose": ("task=pose", "data.image_size=[96,64]", "data.batch_size=8", "model.deconv_channels=[32,32,32]"),
}


def compose_train(*overrides: str, run_dir: Path) -> DictConfig:
    """``objmtl-train`` 's config with ``overrides``, writing into ``run_dir``."""
    return compose_config(*overrides, run_dir=run_dir)


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Runs a console script of this venv as a user would."""
    exe = Path(sys.executable).parent / args[0]
    repo = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "2",
           "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))}
    return subprocess.run([str(exe), *args[1:]], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def corrupt_member(shard: Path, member: str) -> None:
    """Rewrites a tar shard with one member's bytes cut to a third (an undecodable image)."""
    import io
    import tarfile

    members = []
    with tarfile.open(shard) as tar:
        for m in tar.getmembers():
            data = tar.extractfile(m).read()
            if m.name == member:
                data = data[: len(data) // 3]
            members.append((m, data))
    with tarfile.open(shard, "w") as tar:
        for m, data in members:
            m.size = len(data)
            tar.addfile(m, io.BytesIO(data))


def det_target(boxes: list[list[float]], labels: list[int], crowd: list[bool] | None = None) -> dict:
    """A detection target as the detectors' ``loss`` takes it."""
    import torch

    n = len(boxes)
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(n, 4),
            "labels": torch.tensor(labels, dtype=torch.long),
            "iscrowd": torch.tensor(crowd or [False] * n, dtype=torch.bool)}


def eight_coco128_images(real_data: Path, tmp_path: Path) -> Path:
    """8 coco128 images with boxes, converted with the CLI, as both the train and the val split."""
    converted = tmp_path / "coco128"
    result = run_cli("objmtl-data", "convert", "--format", "yolo", "--src", str(real_data / "detection" / "coco128"),
                     "--images", "images/train2017", "--labels", "labels/train2017", "--names", "config.yaml",
                     "--val-fraction", "0", "--out", str(converted))
    assert result.returncode == 0, result.stderr
    return train_equals_val(converted, tmp_path / "eight", need="boxes")


def train_equals_val(converted: Path, root: Path, *, need: str, n: int = 8, start: int = 0) -> Path:
    """Samples ``start .. start + n`` (by key, over every split) of ``converted`` that have a non-empty ``need``
    annotation, written to ``root`` as both the train and the val split (an overfit's data)."""
    from objmtl.data import read_meta
    from objmtl.data.shard_reader import iter_shard
    from objmtl.data.shard_writer import ShardSetWriter

    meta = read_meta(converted)
    raws = [raw for split, shards in meta.splits.items() for shard in shards
            for raw in iter_shard(str(converted / split / shard.file))]
    picked = sorted((r for r in raws if json.loads(r["json"]).get(need)), key=lambda r: r["__key__"])[start:start + n]
    assert len(picked) == n, f"{converted}: {len(picked)} samples with {need} from {start}"
    with ShardSetWriter(root, meta=replace(meta, splits={})) as writer:
        for split in ("train", "val"):
            for raw in picked:
                ext = "jpg" if "jpg" in raw else "png"
                writer.write(split, image=raw[ext], ext=ext, ann=json.loads(raw["json"]))
    return root


class KillAtStep:
    """Test-only Lightning callback: SIGKILLs its own process at the end of optimizer step ``step``, once
    (``marker`` records that it happened, so the resumed run goes on). Given on the command line as
    ``+callbacks.kill._target_=tests.helpers.KillAtStep +callbacks.kill.step=N +callbacks.kill.marker=F``."""

    def __new__(cls, *, step: int, marker: str):  # noqa: ANN204 - a Callback subclass made on demand
        import signal

        import lightning as L

        class _Kill(L.Callback):
            def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
                if trainer.global_step == step and not Path(marker).exists():
                    Path(marker).touch()
                    os.kill(os.getpid(), signal.SIGKILL)

        return _Kill()


class CountBatches:
    """Test-only Lightning callback: appends ``rank epoch batches`` per training epoch to ``out`` (one line
    each), so a test sees what every DDP rank trained on."""

    def __new__(cls, *, out: str):  # noqa: ANN204 - a Callback subclass made on demand
        import lightning as L

        class _Count(L.Callback):
            def on_train_epoch_start(self, trainer: L.Trainer, *args: object) -> None:
                self.n = 0

            def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
                self.n += 1

            def on_train_epoch_end(self, trainer: L.Trainer, *args: object) -> None:
                with open(out, "a") as f:
                    f.write(f"{trainer.global_rank} {trainer.current_epoch} {self.n}\n")

        return _Count()
