"""Printed commands are tested commands: what a command prints as the next step is run here as printed.

- ``objmtl-data convert`` prints two ``objmtl-train`` commands; for every converter format (and each kind
  of annotation yolo converts) both are composed by ``objmtl-train ... --cfg job`` exactly as printed,
  into output folders named like built-in configs (``shards``, ``det``, ``synth``, ...), and must point
  at the converted folder with the right task. One per task kind is trained end to end as printed,
  with ``debug=fast`` and a small image size appended (the printed words come first, unchanged).
- ``objmtl-data synth`` prints ``objmtl-train data.root=OUT``; a run prints ``objmtl-test RUN`` and
  ``objmtl-export onnx RUN ...``; the export prints ``objmtl-predict ...``: each is run as printed.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from objmtl.config import CONFIG_DIR
from objmtl.data.convert.summary import LOCAL_PREFIX
from tests.helpers import run_cli

pytestmark = pytest.mark.realdata

FAST = ("debug=fast", "data.num_workers=0", "data.batch_size=2", "data.eval_batch_size=2")


def _printed(stdout: str, lead: str) -> list[str]:
    """The commands printed after ``lead`` (e.g. ``train on it:``), in order."""
    return [line.split(lead, 1)[1].strip() for line in stdout.splitlines() if line.strip().startswith(lead)]


def _run_printed(command: str, *extra: str, cwd: Path) -> str:
    words = shlex.split(command, comments=True)
    result = run_cli(*words, *extra, cwd=cwd)
    assert result.returncode == 0, f"{command} {' '.join(extra)}\n{result.stdout[-1500:]}\n{result.stderr[-3000:]}"
    return result.stdout


def _voc_tree(root: Path) -> Path:
    """Three 64-px images with one VOC box each, and a train split file."""
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    ids = [f"img{i}" for i in range(3)]
    for i, name in enumerate(ids):
        pixels = np.full((64, 64, 3), 40 * i, np.uint8)
        pixels[10:40, 12:50] = 220
        Image.fromarray(pixels).save(root / "JPEGImages" / f"{name}.jpg")
        (root / "Annotations" / f"{name}.xml").write_text(
            f"<annotation><filename>{name}.jpg</filename><size><width>64</width><height>64</height>"
            "<depth>3</depth></size><object><name>dog</name><difficult>0</difficult><bndbox><xmin>13</xmin>"
            "<ymin>11</ymin><xmax>50</xmax><ymax>40</ymax></bndbox></object></annotation>")
    (root / "ImageSets" / "Main" / "train.txt").write_text("\n".join(ids) + "\n")
    return root


def _text_tree(root: Path) -> Path:
    root.mkdir(parents=True)
    lines = []
    for i in range(4):
        pixels = np.full((48, 64, 3), 30 * i, np.uint8)
        Image.fromarray(pixels).save(root / f"im{i}.png")
        lines.append(f"im{i}.png 4 5 40 30 {i % 2}")
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    return root


def _list_tree(real_data: Path, root: Path) -> Path:
    """mnist160's images named by a 'path label' list (the list format), two per class."""
    src = real_data / "classification" / "mnist160" / "train"
    root.mkdir(parents=True)
    lines = [f"{p.relative_to(src)} {p.parent.name}" for d in sorted(src.iterdir()) if d.is_dir()
             for p in sorted(d.iterdir())[:2]]
    (root / "images").symlink_to(src)
    (root / "train.txt").write_text("\n".join(f"images/{line}" for line in lines) + "\n")
    return root


# (id, out folder name: a built-in config name, the convert arguments after --src, the task it trains)
def _cases(real_data: Path, tmp: Path) -> list[tuple[str, str, list[str], str]]:
    d = real_data
    return [
        ("imagefolder", "cls", ["--format", "imagefolder", "--src", str(d / "classification/hymenoptera_data")],
         "cls"),
        ("list", "synth", ["--format", "list", "--src", str(_list_tree(d, tmp / "list")), "--ann",
                           "train=train.txt"], "cls"),
        ("yolo-det", "shards", ["--format", "yolo", "--src", str(d / "detection/coco128"), "--images",
                                "images/train2017", "--labels", "labels/train2017", "--names", "config.yaml"],
         "det"),
        ("yolo-seg", "seg", ["--format", "yolo", "--src", str(d / "segmentation/coco8-seg"), "--task", "seg"],
         "det"),
        ("yolo-pose", "pose", ["--format", "yolo", "--src", str(d / "pose/coco8-pose"), "--task", "pose"],
         "pose"),
        ("text", "det", ["--format", "text", "--src", str(_text_tree(tmp / "text")), "--ann", "train=train.txt"],
         "det"),
        ("voc", "mtl", ["--format", "voc", "--src", str(_voc_tree(tmp / "voc")), "--split-file",
                        "train=ImageSets/Main/train.txt"], "det"),
        ("coco", "ssl", ["--format", "coco", "--src", str(d / "pose/tiny_coco"), "--ann",
                         "train=annotations/person_keypoints_train2017.json", "--images", "train2017"], "pose"),
        ("masks", "ssl_gray", ["--format", "masks", "--src", str(d / "segmentation/coco128-val-lightly"),
                               "--images", "images/val2017", "--masks", "semantic_segmentation/masks/val2017",
                               "--class-map", "semantic_segmentation/config.yaml"], "seg"),
    ]


@pytest.fixture(scope="module")
def converted(real_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Every case converted once: {id: {out, task, commands}}."""
    tmp = tmp_path_factory.mktemp("printed")
    done = {}
    for case, name, args, task in _cases(real_data, tmp / "src"):
        out = tmp / case / name
        out.parent.mkdir()
        result = run_cli("objmtl-data", "convert", *args, "--out", name, "--workers", "1", cwd=out.parent)
        assert result.returncode == 0, f"{case}: {result.stderr[-2000:]}"
        commands = _printed(result.stdout, "train on it:") + _printed(result.stdout, "or:")
        done[case] = {"out": out.resolve(), "task": task, "commands": commands, "cwd": out.parent}
    return done


def test_no_builtin_data_config_can_clash_with_a_written_one() -> None:
    clashing = sorted(p.name for p in (CONFIG_DIR / "data").glob(f"{LOCAL_PREFIX}*"))
    assert not clashing, f"built-in data configs named like converter output: {clashing}"


def test_every_format_prints_two_commands_that_compose_onto_its_folder(converted: dict[str, dict]) -> None:
    for case, c in converted.items():
        assert len(c["commands"]) == 2, f"{case}: printed {c['commands']}"
        for command in c["commands"]:
            out = _run_printed(command, "--cfg", "job", cwd=c["cwd"])
            cfg = yaml.safe_load(out)
            assert Path(cfg["data"]["root"]) == c["out"], f"{case}: {command} trains on {cfg['data']['root']}"
            assert cfg["task"]["name"] == c["task"], f"{case}: {command} picks task={cfg['task']['name']}"
            assert cfg["data"]["_target_"] == "objmtl.data.ShardDataModule"


@pytest.mark.slow
@pytest.mark.parametrize("case", ["yolo-det", "masks", "coco"])
def test_printed_train_command_trains(converted: dict[str, dict], case: str) -> None:
    """det, seg and pose end to end (yolo-det is the one that hit the 'shards' clash; cls: the synth test)."""
    c = converted[case]
    size = "data.image_size=[64,64]" if c["task"] == "pose" else "data.image_size=64"
    out = _run_printed(c["commands"][0], *FAST, size, f"hydra.run.dir={c['cwd'] / 'run'}", cwd=c["cwd"])
    assert "run directory:" in out


@pytest.mark.slow
def test_synth_run_test_export_predict_as_printed(tmp_path: Path) -> None:
    synth = run_cli("objmtl-data", "synth", "--out", "det", "--n", "60", "--size", "32", cwd=tmp_path)
    assert synth.returncode == 0, synth.stderr
    (train,) = _printed(synth.stdout, "train on it:")
    run = tmp_path / "run"
    out = _run_printed(train, *FAST, "data.image_size=32", f"hydra.run.dir={run}", cwd=tmp_path)
    nexts = [line.split(":", 1)[1].strip() if line.startswith("next:") else line.strip()
             for line in out.splitlines() if line.startswith(("next:", " " * 16 + "objmtl-"))]
    assert [n.split()[0] for n in nexts] == ["objmtl-test", "objmtl-export"], out[-1500:]
    _run_printed(nexts[0], cwd=tmp_path)
    exported = _run_printed(nexts[1], cwd=tmp_path)
    (predict,) = [line.split(":", 1)[1].strip() for line in exported.splitlines() if line.startswith("next:")]
    _run_printed(predict, cwd=tmp_path)
    assert list((run / "export" / "predict").iterdir())


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
