"""The import contract of docs/architecture.md: every module sits on a floor, and the contract bites.

`make lint` runs `lint-imports` on the real tree; these tests check that the contract in pyproject.toml
names every top-level module of objmtl (a new module left off the floors would be unchecked), and that
an upward import added to a copy of the tree makes `lint-imports` fail with a line naming both ends.
"""

from __future__ import annotations

import os
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

import objmtl

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def _floors() -> list[set[str]]:
    (layers,) = [c for c in _contracts() if c["type"] == "layers"]
    return [{name.strip() for name in floor.split("|")} for floor in layers["layers"]]


def test_every_top_level_module_is_on_one_floor():
    modules = {f"objmtl.{m.name}" for m in pkgutil.iter_modules(objmtl.__path__)}
    placed = [name for floor in _floors() for name in floor]
    assert len(placed) == len(set(placed)), f"a module sits on two floors: {placed}"
    assert modules - {"objmtl.conf"} <= set(placed), f"not on any floor: {sorted(modules - set(placed))}"
    assert set(placed) <= modules, f"floors name modules that do not exist: {sorted(set(placed) - modules)}"


def test_cycles_are_forbidden_at_every_depth():
    (acyclic,) = [c for c in _contracts() if c["type"] == "acyclic_siblings"]
    assert acyclic["ancestors"] == ["objmtl"]


def _lint_copy(tmp: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tmp / "src")}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=tmp, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="lint-imports is not installed (pip install -e '.[dev]')")
def test_an_upward_import_breaks_the_contract(tmp_path):
    shutil.copytree(ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    clean = _lint_copy(tmp_path)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "Contracts: 2 kept, 0 broken." in clean.stdout

    schema = tmp_path / "src" / "objmtl" / "data" / "schema.py"
    # a function-local import counts as much as one at the top of the file
    schema.write_text(schema.read_text() + "\n\ndef _upward():\n    import objmtl.cli.train  # noqa: F401\n")
    broken = _lint_copy(tmp_path)
    assert broken.returncode != 0
    assert "objmtl.data.schema -> objmtl.cli.train" in broken.stdout, broken.stdout
    assert "Contracts: 0 kept, 2 broken." in broken.stdout  # upward, and a cycle (cli imports data)
