"""One LightningDataModule over a shard set, for every task type."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from objmtl.data.det_samples import AspectGroupedDataset
from objmtl.data.mixing import MixedDataset, merge_metas
from objmtl.data.resumable_loader import ResumableLoader
from objmtl.data.schema import TASKS, Meta, read_meta
from objmtl.data.shard_reader import ShardDataset
from objmtl.data.worker_init import worker_init
from objmtl.errors import UserError
from objmtl.locations import cache_dir
from objmtl.task_kinds import builtin_kind, head_pieces, piece

__all__ = ["ShardDataModule", "meta_of", "resolve_root"]

log = logging.getLogger(__name__)


def _synth_writer(synth: dict[str, Any]) -> tuple[Callable[..., Any], str]:
    """``data.synth.writer`` (a function, or its ``{_target_: hydra.utils.get_method, path: ...}`` node before
    instantiation), else the built-in writer; and the suffix its sets take in the cache folder."""
    writer = synth.get("writer")
    if writer is None:
        from objmtl.data.synth import write_synthetic

        return write_synthetic, ""
    if not callable(writer):
        from hydra.utils import instantiate

        writer = instantiate(writer)
    return writer, f"-{writer.__name__}"


def resolve_root(root: str | None, synth: dict[str, Any] | None) -> Path:
    """The shard folder to read: ``root`` if given, else the cache folder of the synthetic set."""
    if root:
        return Path(root).expanduser()
    if not synth:
        raise UserError("data.root: not set (give data.root=SHARDS, or use data=synth)")
    s = dict(synth)
    suffix = _synth_writer(s)[1]
    return cache_dir() / f"synth-n{s.get('n', 1000)}-s{s.get('seed', 0)}-px{s.get('image_size', 128)}{suffix}"


def meta_of(root: str | None, synth: dict[str, Any] | None, sources: list[dict[str, Any]] | None) -> Meta:
    """The Meta a run trains with: one shard set's, or the merged label space of ``sources``."""
    if sources:
        return merge_metas([read_meta(Path(s["root"]).expanduser()) for s in sources])[0]
    path = resolve_root(root, synth)
    if not root and synth:  # ${meta:...} in a transform is read before prepare_data: write the set on first use
        ensure_synth(path, synth)
    return read_meta(path)


def ensure_synth(root: Path, synth: dict[str, Any]) -> None:
    """Writes the synthetic shard set to ``root`` once; safe when several processes race.

    ``synth`` holds the writer's keyword arguments and, optionally, ``writer``: a task kind's own synthetic
    set (a function taking the folder and those keywords, as :func:`objmtl.data.synth.write_synthetic` does).
    """
    if (root / "meta.json").exists():
        return
    from filelock import FileLock

    args = dict(synth)
    writer, _ = _synth_writer(args)
    args.pop("writer", None)
    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root) + ".lock"):
        if not (root / "meta.json").exists():
            log.info("writing the synthetic data set to %s (once; it is cached)", root)
            writer(root, overwrite=root.exists(), progress=True, **args)


class ShardDataModule(L.LightningDataModule):
    """Train / val / test loaders over ``ROOT/{split}/*.tar``.

    Args:
        root: the shard set (``meta.json`` inside). ``None`` with ``synth`` set uses the cached
            synthetic set, written on first use.
        task: the task kind's name (``cls``, ...), for messages; and, without ``samples``, the built-in kind
            whose adapter reads the samples (``conf/kind/<task>.yaml``).
        samples: the task kind's sample adapter class (:class:`~objmtl.data.sample_adapter.SampleAdapter`),
            ``task.kind.samples``: ``objmtl-train`` and ``objmtl-test`` pass it.
        head_samples: a multi-head kind's ``{head: its adapter class}`` (``task.kind.heads.<head>.samples``).
        train_transform, eval_transform: albumentations pipelines (ending in ``ToTensorV2``).
        samples_per_epoch: fixed-length training epochs drawn by resampling shards.
        on_decode_error: ``warn`` skips (and counts) an undecodable image; ``raise`` stops.
        sources: several shard sets instead of ``root``: ``[{"root": A, "weight": 0.7}, ...]``,
            merged into one label space (see :mod:`objmtl.data.mixing`).
        mix: how training draws from ``sources``: concat, weighted, balanced or repeat_factor
            (evaluation always reads every source once).
        repeat_threshold: LVIS's ``t`` for ``mix=repeat_factor``.
        image_size, mean, std: the input size and normalisation the transforms use, recorded
            for export and prediction.
        group_by_aspect: training batches of only landscape or only portrait images
            (:func:`objmtl.data.det_samples.group_by_aspect`), for less padding in detection.
        heads: ``task=mtl``: the heads trained (``cls``, ``det``, ``seg``, ``pose``); the transforms are then
            ``{head: pipeline}``, a source may lend only some kinds (``{root: A, tasks: [cls]}``), and each
            evaluation stage has one loader per head, in this order (:mod:`objmtl.data.mtl_samples`).
        pose_size: ``task=mtl``: the pose head's crop (h, w), recorded for export and prediction.
    """

    def __init__(self, *, root: str | None = None, task: str = "cls", batch_size: int = 32,
                 eval_batch_size: int | None = None, num_workers: int = 2,
                 train_transform: Any = None, eval_transform: Any = None, shuffle_buffer: int = 1000,
                 samples_per_epoch: int | None = None, seed: int = 0, on_decode_error: str = "warn",
                 synth: dict[str, Any] | None = None, train_split: str = "train", val_split: str = "val",
                 test_split: str = "test", image_size: int | list[int] | None = None,
                 mean: list[float] | None = None, std: list[float] | None = None,
                 sources: list[dict[str, Any]] | None = None, mix: str = "concat",
                 repeat_threshold: float = 0.001, group_by_aspect: bool = False,
                 heads: list[str] | None = None, pose_size: list[int] | None = None,
                 samples: type | None = None, head_samples: dict[str, type] | None = None) -> None:
        super().__init__()
        self.sources = [dict(s) for s in sources] if sources else None
        if self.sources and any("root" not in s for s in self.sources):
            raise UserError("data.sources: every entry needs a root (and, for mix=weighted, a weight)")
        self.mix, self.repeat_threshold = mix, repeat_threshold
        self.root = Path(self.sources[0]["root"]) if self.sources else resolve_root(root, synth)
        self.synth = dict(synth) if synth and not root else None
        self.task = task
        self.heads = list(heads) if heads is not None else None
        if samples is None:  # built by hand: the built-in kind's adapters
            kind = builtin_kind(task, heads=self.heads)
            samples, head_samples = piece(kind, "samples"), head_pieces(kind, "samples")
        self.adapter: Any = samples
        self.head_samples = dict(head_samples or {})
        self.adapter.check_heads(self.heads, self.head_samples)
        known = [*TASKS, *(h for h in self.head_samples if h not in TASKS)]
        for i, source in enumerate(self.sources or []):
            kinds = source.get("tasks")
            if kinds is not None and (isinstance(kinds, str) or not all(k in known for k in kinds)):
                raise UserError(f"data.sources[{i}].tasks={kinds}: a list of the annotation kinds this source lends, "
                                f"among {', '.join(known)}")
        self.pose_size = list(pose_size) if pose_size is not None else None
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.train_transform, self.eval_transform = train_transform, eval_transform
        self.shuffle_buffer, self.samples_per_epoch, self.seed = shuffle_buffer, samples_per_epoch, seed
        self.on_decode_error = on_decode_error
        self.splits = {"train": train_split, "val": val_split, "test": test_split}
        self._datasets: dict[str, ShardDataset] = {}
        self._adapters: dict[str, Any] = {}  # each dataset's sample adapter
        # what the transforms normalise with: exported models and predictors need the same
        self.image_size, self.mean, self.std = image_size, mean, std
        self.group_by_aspect = group_by_aspect
        self._resume_at: tuple[int, int] | None = None  # (epoch, training batches done), from a checkpoint

    def prepare_data(self) -> None:
        if self.synth is not None:
            ensure_synth(self.root, self.synth)

    def read_meta(self) -> Meta:
        """The shard set's meta.json (merged over sources), checked to carry what this task trains on."""
        meta = meta_of(str(self.root), None, self.sources)
        needed = self.adapter.required(self.heads)  # {annotation kind: who needs it}; ssl: cls labels, for its k-NN
        for kind, what in needed.items():
            if kind not in meta.tasks:
                raise UserError(f"{self.root}: {what} needs annotations these shards do not carry "
                                f"(they carry: {', '.join(meta.tasks) or 'nothing'})")
        if self.sources:
            lent = {k for s in self.sources for k in read_meta(Path(s["root"]).expanduser()).tasks
                    if s.get("tasks") is None or k in s["tasks"]}
            for kind, what in needed.items():
                if kind not in lent:
                    raise UserError(f"data.sources: no source lends {kind} annotations, which {what} needs "
                                    "(add it to a source's tasks, or drop that head from task.heads)")
        return meta

    def count(self, stage: str) -> int:
        """Samples in the split of ``stage`` (``train``, ``val``, ``test``), over all sources (a merged label
        space lists no splits)."""
        roots = [Path(s["root"]).expanduser() for s in self.sources] if self.sources else [self.root]
        return sum(read_meta(r).count(self.splits[stage]) for r in roots)

    def label_space(self) -> dict[str, Any] | None:
        """With several sources: the merged classes and each source's id map (recorded with the run)."""
        if not self.sources:
            return None
        meta, maps = merge_metas([read_meta(Path(s["root"]).expanduser()) for s in self.sources])
        return {"classes": meta.classes, "mask_classes": meta.mask_classes,
                "sources": [{"root": str(s["root"]), **m} for s, m in zip(self.sources, maps, strict=True)]}

    def _shards(self, root: Path, stage: str, transform: Any) -> ShardDataset:
        train = stage == "train"
        split = self.splits["train" if stage == "bank" else stage]  # bank: the train split, read for evaluation
        return ShardDataset(
            root=root, split=split, transform=transform, shuffle=train,
            shuffle_buffer=self.shuffle_buffer, seed=self.seed,
            batch_size=self.batch_size if train else self.eval_batch_size, drop_last=train,
            samples_per_epoch=self.samples_per_epoch if train and not self.sources else None,
            on_decode_error=self.on_decode_error)

    def _make_adapter(self, stage: str, head: str | None) -> Any:
        transform = self.train_transform if stage == "train" else self.eval_transform
        return self.adapter.build(transform=transform, heads=[head] if head else self.heads, parts=self.head_samples)

    def dataset(self, stage: str, head: str | None = None) -> ShardDataset | MixedDataset | AspectGroupedDataset:
        """The dataset of ``train``, ``val``, ``test`` or ``bank`` (the train split with the evaluation
        transform, in order; built once); under ``task=mtl`` an evaluation stage's ``head`` picks that head's
        view."""
        name = f"{stage}:{head}" if head else stage
        if name not in self._datasets:
            self.read_meta()
            adapter = self._adapters[name] = self._make_adapter(stage, head)
            ds: Any
            if not self.sources:
                ds = self._shards(self.root, stage, adapter)
            else:
                space = self.label_space()
                assert space is not None
                parts = [self._shards(Path(s["root"]).expanduser(), stage, None) for s in self.sources]
                ds = MixedDataset(
                    sources=parts, maps=space["sources"], mode=self.mix if stage == "train" else "concat",
                    weights=[float(s.get("weight", 1.0)) for s in self.sources],
                    samples_per_epoch=self.samples_per_epoch if stage == "train" else None,
                    repeat_threshold=self.repeat_threshold, transform=adapter, seed=self.seed,
                    batch_size=parts[0].batch_size, kinds=[s.get("tasks") for s in self.sources])
            if stage == "train" and self.group_by_aspect:
                ds = AspectGroupedDataset(dataset=ds, batch_size=self.batch_size)
            self._datasets[name] = ds
        return self._datasets[name]

    def _loader(self, stage: str, head: str | None = None) -> DataLoader:
        ds = self.dataset(stage, head)
        adapter = self._adapters[f"{stage}:{head}" if head else stage]  # its collate makes the batches
        train = stage == "train"
        # persistent_workers stays off: workers must see the epoch set on the dataset each epoch
        return (ResumableLoader if train else DataLoader)(
            ds, batch_size=self.batch_size if train else self.eval_batch_size, num_workers=self.num_workers,
            collate_fn=adapter.collate, drop_last=train, pin_memory=torch.cuda.is_available(),
            worker_init_fn=worker_init if self.num_workers else None)

    def train_dataloader(self) -> DataLoader:
        loader = self._loader("train")
        trainer = getattr(self, "trainer", None)
        epoch, done = self._resume_at if self._resume_at else (trainer.current_epoch if trainer else None, 0)
        self._resume_at = None
        if epoch is not None and hasattr(loader.dataset, "set_epoch"):
            loader.dataset.set_epoch(epoch)  # the first iterator is made before on_train_epoch_start
        if done:
            loader.skip_once(done)
        return loader

    # ---- resuming inside an epoch ----

    def state_dict(self) -> dict[str, Any]:
        """Saved with each checkpoint (Lightning calls it): for one written inside an epoch, that epoch and
        how many of its training batches are done, so a resumed run continues with the next batch."""
        trainer = getattr(self, "trainer", None)
        if trainer is None or not trainer.training:
            return {}
        done = int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)
        if 0 < done < trainer.num_training_batches:
            return {"epoch": int(trainer.current_epoch), "train_batches_done": done}
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict:
            self._resume_at = (int(state_dict["epoch"]), int(state_dict["train_batches_done"]))

    def _eval_loaders(self, stage: str) -> DataLoader | list[DataLoader]:
        """The ``stage`` loader; for an adapter with ``knn_bank`` (ssl), ``[bank, stage]``: the training split
        read with the evaluation transform comes first, as the k-NN memory bank."""
        if getattr(self.adapter, "knn_bank", False):
            return [self._loader("bank"), self._loader(stage)]
        views = self.adapter.eval_views(self.heads)  # a multi-head kind (task=mtl): one loader per head
        if views == [None]:
            return self._loader(stage)
        return [self._loader(stage, view) for view in views]

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        return self._eval_loaders("val")

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        return self._eval_loaders("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test")
