"""A task kind is reached from its config: conf/kind/<name>.yaml names its pieces, no module keeps a table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import objmtl
from objmtl.data.cls_samples import ClassificationSamples
from objmtl.data.sample_adapter import SampleAdapter
from objmtl.errors import UserError
from objmtl.export.det_export import DetectionExport
from objmtl.export.export_kind import ExportKind, meta_head_kinds, meta_kind
from objmtl.locations import CONFIG_DIR
from objmtl.runs.outputs import EvalOutputs
from objmtl.runs.train import build_datamodule
from objmtl.task_kinds import builtin_kind, head_pieces, kind_of, piece
from tests.helpers import compose_train

TASKS = sorted(p.stem for p in (CONFIG_DIR / "task").glob("*.yaml"))
BASES = {"samples": SampleAdapter, "outputs": EvalOutputs, "export": ExportKind}


class CountingSamples(ClassificationSamples):
    """A plug-in adapter from outside the package: the data module must use it as the config says."""

    task = "cls"


@pytest.mark.parametrize("task", TASKS)
def test_every_task_config_brings_its_kind_and_each_piece_is_what_its_consumer_calls(task: str,
                                                                                      tmp_path: Path) -> None:
    cfg = compose_train(f"task={task}", run_dir=tmp_path)
    kind = cfg.task.kind
    assert kind.samples and kind.outputs, f"conf/kind/{task}.yaml names no samples / outputs"
    for what, base in BASES.items():
        if kind.get(what) is not None:
            cls = piece(kind, what)
            assert isinstance(cls, type) and issubclass(cls, base), (task, what, cls)
            assert cls.task == task, f"{cls} says task={cls.task}, configured for {task}"
    # a run saved before task.kind existed gets the same pieces from the built-in file
    old = kind_of({"name": task, "heads": list(cfg.task.get("heads") or []) or None})
    assert OmegaConf.to_container(old) == OmegaConf.to_container(kind)
    if task == "mtl":  # each head of the multi-task config has its kind, under task.kind.heads
        assert set(kind.heads) == set(cfg.task.module.heads)
        for what in ("samples", "outputs", "export"):
            assert {h: c.task for h, c in head_pieces(kind, what).items()} == {h: h for h in kind.heads}
        assert set(old.heads) == set(cfg.task.heads)


def test_a_kind_without_a_config_file_is_one_line_naming_the_known_ones() -> None:
    with pytest.raises(UserError, match=r"task.name=depth: .*conf/kind/depth.yaml \(built in: cls, det, inst, mtl"):
        builtin_kind("depth")
    with pytest.raises(UserError, match="task.kind.export: not set"):
        piece(builtin_kind("ssl"), "export")


def test_the_data_module_reads_samples_through_the_adapter_the_config_names(synth_root: Path,
                                                                              tmp_path: Path) -> None:
    cfg = compose_train("task=cls", f"data.root={synth_root}", "data.num_workers=0", "data.batch_size=4",
                        f"task.kind.samples.path={__name__}.CountingSamples", run_dir=tmp_path)
    dm = build_datamodule(cfg)
    assert dm.adapter is CountingSamples
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape[0] == 4
    assert isinstance(dm.dataset("train").transform, CountingSamples)


def test_an_onnx_file_names_its_decoding_and_an_older_one_gets_the_builtin_kind() -> None:
    assert meta_kind({"task": "det"}) is DetectionExport  # written before objmtl.kind existed
    assert meta_kind({"task": "mtl", "kind": "objmtl.export.det_export.DetectionExport"}) is DetectionExport
    assert set(meta_head_kinds({"task": "mtl", "heads": {"cls": ["OUTPUT__0"], "det": []}})) == {"cls", "det"}
    with pytest.raises(UserError, match="objmtl.kind=collections.OrderedDict: not an objmtl.export.export_kind"):
        meta_kind({"task": "det", "kind": "collections.OrderedDict"})
    with pytest.raises(UserError, match="objmtl.kind=objmtl.nowhere.Kind: cannot load"):
        meta_kind({"task": "det", "kind": "objmtl.nowhere.Kind"})


# Outside a kind's own files (tasks/, *_samples.py, *_outputs.py, *_export.py) nothing branches on a task
# kind's name. What remains, and why (docs/architecture.md):
_MAY_NAME_KINDS = {
    "data/convert/yolo.py": "YOLO's own label layouts (detect / segment / pose), not objmtl's task kinds",
    "data/convert/summary.py": "the converter prints which task= the annotations it wrote can train",
}
_KIND_COMPARISON = re.compile(r"""(==|!=|\bin)\s*\(?\s*["'](cls|det|seg|pose|ssl|mtl)["']""")


def test_no_module_outside_a_task_kinds_own_files_branches_on_its_name() -> None:
    root = Path(objmtl.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        own = rel.startswith("tasks/") or re.search(r"(^|/)\w+_(samples|outputs|export)\.py$", rel)
        if own or rel in _MAY_NAME_KINDS:
            continue
        found += [f"{rel}:{i}: {line.strip()}" for i, line in enumerate(path.read_text().splitlines(), 1)
                  if _KIND_COMPARISON.search(line)]
    assert not found, "task-kind names compared outside the kind's files:\n" + "\n".join(found)
    assert _KIND_COMPARISON.search('if task == "det":')  # the pattern finds what it looks for
