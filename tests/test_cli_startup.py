"""A wrong path answers at once: one ``error:`` line and exit 2, decided before torch, Lightning or Hydra load.

Not timed (the figures are in bench/cli_startup.py and docs/benchmarks.md); what is asserted is the
structure that makes it fast: each command, run in a fresh interpreter, reports the path without
importing the heavy packages.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "lightning", "hydra", "albumentations", "onnx", "onnxruntime", "matplotlib")
BIN = Path(sys.executable).parent

# runs MODULE.main(ARGV) and prints the heavy packages it loaded on stdout; exits with main's status
PROBE = """
import json, sys
from importlib import import_module
main = import_module(sys.argv[1]).main
try:
    main(sys.argv[3:])
    code = 0
except SystemExit as e:
    code = e.code
print(json.dumps([m for m in json.loads(sys.argv[2]) if m in sys.modules]))
sys.exit(code)
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}


@pytest.fixture
def paths(tmp_path: Path) -> dict[str, str]:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a checkpoint\n")
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    return {"tmp": str(tmp_path), "notes": str(notes), "run": str(tmp_path / "run")}


# (module, argv with {tmp}/{notes}/{run} placeholders, the path the error line names)
CASES = [
    ("objmtl.cli.test", ["{tmp}/missing_dir"], "{tmp}/missing_dir: no such run directory or checkpoint"),
    ("objmtl.cli.test", ["{notes}"], "{notes}: not a checkpoint"),
    ("objmtl.cli.test", ["{tmp}"], "{tmp}: not a run directory"),
    ("objmtl.cli.export", ["onnx", "{notes}", "--out", "{tmp}/x.onnx"], "{notes}: not a checkpoint"),
    ("objmtl.cli.export", ["onnx", "{tmp}/missing.ckpt", "--out", "{tmp}/x.onnx"],
     "{tmp}/missing.ckpt: no such run directory or checkpoint"),
    ("objmtl.cli.data", ["inspect", "{tmp}/missing/"], "{tmp}/missing: no such shard folder"),
    ("objmtl.cli.data", ["inspect", "{tmp}"], "{tmp}/meta.json: missing"),
    ("objmtl.cli.data", ["browse", "{tmp}/missing/", "--out", "{tmp}/viz"], "{tmp}/missing: not a shard set"),
    ("objmtl.cli.data", ["browse", "{tmp}/missing", "--format", "yolo", "--out", "{tmp}/viz"],
     "{tmp}/missing: no such folder"),
    ("objmtl.cli.data", ["convert", "--format", "imagefolder", "--src", "{tmp}/missing", "--out", "{tmp}/s"],
     "{tmp}/missing: no such folder"),
    ("objmtl.cli.predict", ["{tmp}/missing.ckpt", "{tmp}/missing_input"],
     "{tmp}/missing.ckpt: no such run directory or checkpoint"),
    ("objmtl.cli.predict", ["{tmp}/m.onnx", "{tmp}"], "{tmp}/m.onnx: no such ONNX file"),
    ("objmtl.cli.predict", ["{notes}", "{tmp}"], "{notes}: not a model"),
    ("objmtl.cli.predict", ["{run}", "{tmp}/missing_input"], "{tmp}/missing_input: no such file or folder"),
    ("objmtl.cli.ckpt", ["show", "{tmp}/missing.ckpt"], "{tmp}/missing.ckpt: no such run directory or checkpoint"),
]


@pytest.mark.parametrize(("module", "argv", "message"), CASES,
                         ids=[f"{m.rsplit('.', 1)[1]}-{i}" for i, (m, _, _) in enumerate(CASES)])
def test_a_wrong_path_is_one_line_before_the_heavy_imports(module: str, argv: list[str], message: str,
                                                           paths: dict[str, str]) -> None:
    argv = [a.format(**paths) for a in argv]
    done = subprocess.run([sys.executable, "-c", PROBE, module, json.dumps(HEAVY), *argv], capture_output=True,
                          text=True, timeout=60, env=_env())
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith(f"error: {message.format(**paths)}"), done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


@pytest.mark.parametrize(("command", "argv", "named"), [
    ("objmtl-test", ["missing_dir"], "missing_dir"),
    ("objmtl-export", ["onnx", "notes.txt", "--out", "x.onnx"], "notes.txt"),
    ("objmtl-data", ["inspect", "missing/"], "missing"),
])
def test_the_entry_points_answer_with_one_line(command: str, argv: list[str], named: str, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    done = subprocess.run([str(BIN / command), *argv], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env=_env())
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-2000:]
    assert lines[0].startswith(f"error: {named}: ")


def test_building_every_parser_imports_nothing_heavy() -> None:
    code = (
        "import json, sys\n"
        "from objmtl.cli import ckpt, data, doctor, export, predict, test\n"
        "from objmtl.data.browse import add_browse_parser\n"  # the parser's old home still offers it
        "for m in (ckpt, data, doctor, export, predict, test):\n"
        "    m.build_parser().format_help()\n"
        "data.build_parser().parse_args(['browse', 'x', '--out', 'y', '--format', 'coco'])\n"
        "print(json.dumps([m for m in json.loads(sys.argv[1]) if m in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, json.dumps(HEAVY)], capture_output=True, text=True,
                          timeout=60, env=_env())
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
