"""Bad sources at ``objmtl-data convert``: a counted drop in report.json, or one line naming the file.

Never a stack trace, and never an OUT folder (or a partial one beside it) after an error. The
engine's drops run through the console script (two runs, started together in a module fixture, as
each pays ~5 s of start-up); the reader errors call the same ``main`` in this process.
"""

from __future__ import annotations

import json
import re
import struct
import subprocess
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from objmtl.cli import data as data_cli
from objmtl.data.convert.image_folder import read_image_folder
from objmtl.data.convert.plain_text import read_text_lists
from objmtl.data.convert.voc import read_voc
from objmtl.errors import UserError
from tests.helpers import run_cli

LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<annotation><filename>a.jpg</filename><object><name>&lol9;</name></object></annotation>
"""
EXTERNAL = """<?xml version="1.0"?>
<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<annotation><object><name>&x;</name></object></annotation>
"""
# the engine's tqdm bar also goes to stderr (without a newline before the error): strip it first
_BAR = re.compile(r"convert -> [^:\r\n]*:[^|\r\n]*\|[^|\r\n]*\|[^\]\r\n]*\]")


def _jpeg(path: Path, seed: int = 0) -> None:
    pixels = np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


def _png_bomb(path: Path, width: int = 20000, height: int = 12000) -> None:
    """A 1-bit grey PNG whose header claims width x height pixels, with a tiny IDAT (~100 bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * (1 + width // 8) * 4)
    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunks)


def _convert(fmt: str, src: Path, out: Path, *extra: str) -> tuple[subprocess.CompletedProcess, Path]:
    return run_cli("objmtl-data", "convert", "--format", fmt, "--src", str(src), "--out", str(out),
                   "--val-fraction", "0", *extra), out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """The engine's drops, through the real console script: counted, and with --strict an error."""
    base = tmp_path_factory.mktemp("bad")
    src = base / "src"
    (src / "images").mkdir(parents=True)
    _jpeg(src / "images" / "good.jpg", 0)
    _jpeg(src / "images" / "other.jpg", 1)
    whole = (src / "images" / "good.jpg").read_bytes()
    (src / "images" / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (src / "images" / "notes.jpg").write_text("not an image, just text\n")
    _png_bomb(src / "images" / "bomb.png")
    (base / "drops.txt").write_text(
        "images/good.jpg nan 1 20 20 0 -5 -3 40 30 1 2 2 10 10 0\n"  # NaN: dropped; negative: clipped
        "images/other.jpg\n"  # an image with no objects
        "images/truncated.jpg 1 1 5 5 0\n"
        "images/notes.jpg\n"
        "images/bomb.png 1 1 5 5 1\n"
        "../../etc/passwd 1 2 3 4 0\n")
    jobs = {
        "drops": ("text", src, base / "drops_out", "--ann", f"train={base / 'drops.txt'}"),
        "strict": ("text", src, base / "strict_out", "--ann", f"train={base / 'drops.txt'}", "--strict"),
    }
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(_convert, *job) for name, job in jobs.items()}
        return {name: f.result() for name, f in futures.items()}


def _error_line(result: subprocess.CompletedProcess | tuple[int, str], out: Path) -> str:
    """The one ``error:`` line of a failed run; also checks that nothing was left at OUT."""
    code, stderr = (result.returncode, result.stderr) if isinstance(result, subprocess.CompletedProcess) \
        else result
    assert code == 2, stderr
    assert "Traceback" not in stderr
    lines = [line.strip() for line in _BAR.sub("", stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert not out.exists() and not list(out.parent.glob(f".{out.name}.partial-*"))
    return lines[0]


def _main(capsys: pytest.CaptureFixture[str], fmt: str, src: Path, out: Path, *extra: str) -> str:
    """``objmtl-data convert`` in this process (the console script's own ``main``): its error line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        data_cli.main(["convert", "--format", fmt, "--src", str(src), "--out", str(out), "--workers", "1",
                       *extra])
    return _error_line((exited.value.code, capsys.readouterr().err), out)


def test_counted_drops_and_fixes(runs: dict[str, Any]) -> None:
    result, out = runs["drops"]
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["images_read"] == 6
    assert report["images_read"] == sum(report["samples_written"].values()) + report["images_dropped"]
    assert report["samples_written"] == {"train": 2} and report["images_dropped"] == 4
    assert report["dropped"] == {
        "image that can't be decoded": 2,  # the truncated JPEG and the text file
        "image over Pillow's decompression-bomb limit": 1,
        "annotation path leaves the data set root": 1,
        "instance with NaN or infinite coordinates dropped": 1,
        "instances of a dropped image": 3,  # truncated.jpg's, bomb.png's and passwd's boxes
    }
    assert report["fixed"] == {"box clipped to the image": 1}
    assert report["instances_read"] == 6 and report["instances_written"] == 2
    assert sorted(p.name for p in out.iterdir()) == ["conf", "meta.json", "report.json", "train"]


def test_bomb_png_is_small(tmp_path: Path) -> None:
    _png_bomb(tmp_path / "b.png")
    assert (tmp_path / "b.png").stat().st_size < 1000
    with pytest.raises(Image.DecompressionBombError):  # at open, from the header: nothing is allocated
        Image.open(tmp_path / "b.png")


def test_strict_turns_a_drop_into_an_error(runs: dict[str, Any]) -> None:
    line = _error_line(*runs["strict"])
    assert "drops.txt:1: instance with NaN or infinite coordinates dropped" in line
    assert "--strict" in line


def test_non_number_coordinate_names_file_and_line(capsys: pytest.CaptureFixture[str],
                                                    tmp_path: Path) -> None:
    _jpeg(tmp_path / "good.jpg")
    (tmp_path / "bad_number.txt").write_text("good.jpg 1 2 3 4 0\ngood.jpg 1 2 abc 4 0\n")
    line = _main(capsys, "text", tmp_path, tmp_path / "out", "--ann", f"train={tmp_path / 'bad_number.txt'}")
    assert line.startswith("error: ") and line.endswith("bad_number.txt:2: coordinate 'abc' is not a number")


def test_xml_that_is_not_voc(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Annotations" / "a.xml").write_text("<root><object><name>dog</name></object></root>\n")
    line = _main(capsys, "voc", tmp_path, tmp_path / "out")
    assert line.endswith("a.xml: not a VOC annotation (root element <root>, expected <annotation>)")


def test_billion_laughs_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Annotations" / "a.xml").write_text(LAUGHS)
    start = time.perf_counter()
    line = _main(capsys, "voc", tmp_path, tmp_path / "out")
    assert time.perf_counter() - start < 2.0  # refused at the declaration, never expanded
    assert line == f"error: {tmp_path / 'Annotations' / 'a.xml'}: refused unsafe XML (EntitiesForbidden)"


def test_external_entity_is_refused(tmp_path: Path) -> None:
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Annotations" / "a.xml").write_text(EXTERNAL)
    with pytest.raises(UserError, match=r"a\.xml: refused unsafe XML"):
        read_voc(tmp_path)


@pytest.mark.parametrize(("xml", "reason"), [
    ("<annotation><object><name>dog</name></object></annotation>", "object 0 has no <bndbox>"),
    ("<annotation><object><bndbox/></object></annotation>", "object 0 has no <name>"),
    ("<annotation><object><name>dog</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>4</xmax></bndbox>"
     "</object></annotation>", "object 0 <bndbox> has no <ymax>"),
])
def test_voc_missing_elements(tmp_path: Path, xml: str, reason: str) -> None:
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Annotations" / "a.xml").write_text(xml)
    with pytest.raises(UserError, match=re.escape(f"a.xml: not a VOC annotation ({reason})")):
        read_voc(tmp_path)


def test_voc_bad_values(tmp_path: Path) -> None:
    (tmp_path / "Annotations").mkdir()
    box = "<bndbox><xmin>1</xmin><ymin>x</ymin><xmax>4</xmax><ymax>4</ymax></bndbox>"
    (tmp_path / "Annotations" / "a.xml").write_text(f"<annotation><object><name>d</name>{box}</object>"
                                                    "</annotation>")
    with pytest.raises(UserError, match=r"a\.xml: object 0 <bndbox> <ymin> 'x' is not a number"):
        read_voc(tmp_path)
    (tmp_path / "Annotations" / "a.xml").write_text("<annotation><object>")
    with pytest.raises(UserError, match=r"a\.xml: not valid XML"):
        read_voc(tmp_path)


def test_empty_source_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    line = _main(capsys, "voc", tmp_path / "empty", tmp_path / "out")
    assert line.startswith(f"error: {tmp_path / 'empty'}: no Annotations folder")
    with pytest.raises(UserError, match=re.escape(f"{tmp_path / 'empty'}: no class folders")):
        read_image_folder(tmp_path / "empty")
    (tmp_path / "l.txt").write_text("\n\n")
    with pytest.raises(UserError, match=r"l\.txt: the list files name no images"):
        read_text_lists(tmp_path, lists={"train": tmp_path / "l.txt"})


def test_text_lines_of_the_wrong_shape(tmp_path: Path) -> None:
    (tmp_path / "l.txt").write_text("a.jpg 1 2 3 4 0\na.jpg 1 2 3 4\n")
    with pytest.raises(UserError, match=r"l\.txt:2: expected the image path then groups of 5 fields"):
        read_text_lists(tmp_path, lists={"train": tmp_path / "l.txt"})
    (tmp_path / "l.txt").write_text("a.jpg 1 2 3 4 0.5\n")
    with pytest.raises(UserError, match=r"l\.txt:1: class '0\.5' is not an integer id"):
        read_text_lists(tmp_path, lists={"train": tmp_path / "l.txt"})
