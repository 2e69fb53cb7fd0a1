"""The config tables in the docs list every option of the shipped config tree.

The options are read from ``objmtl.config.CONFIG_DIR`` when the test runs (every ``<group>/<option>.yaml``,
nested groups as ``a/b``), so a yaml file added to the tree without a line in the docs fails here:

- ``docs/configuring.md`` needs one table row per option whose first cell is `` `group=option` ``
  followed by a non-empty description;
- ``README.md``'s "Config tree" table needs, in the row of each group (first cell `` `group` ``), every
  option of that group in backticks.
"""

from __future__ import annotations

import re
from pathlib import Path

from objmtl.config import CONFIG_DIR

REPO = Path(__file__).resolve().parents[1]
CONFIGURING = REPO / "docs" / "configuring.md"
README = REPO / "README.md"


def config_options(root: Path = CONFIG_DIR) -> dict[str, list[str]]:
    """``{group: [option, ...]}`` for every yaml file below ``root`` (the top-level ``train.yaml`` is no group)."""
    groups: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*.yaml")):
        rel = path.relative_to(root)
        if len(rel.parts) < 2:
            continue
        groups.setdefault("/".join(rel.parts[:-1]), []).append(path.stem)
    return groups


def table_rows(text: str) -> list[list[str]]:
    """The cells of every markdown table row (separator rows left out)."""
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if not (line.startswith("|") and line.endswith("|")) or len(line) < 2:
            continue
        cells = [c.strip() for c in line[1:-1].split("|")]
        if all(re.fullmatch(r":?-+:?", c) for c in cells if c):
            continue
        rows.append(cells)
    return rows


def section(text: str, heading: str) -> str:
    """The text under the markdown heading that starts with ``heading``, up to the next heading of any level."""
    match = re.search(rf"^#+ {re.escape(heading)}.*?$(.*?)(?=^#+ |\Z)", text, flags=re.M | re.S)
    assert match, f"no heading starting with {heading!r}"
    return match.group(1)


def missing_in_configuring(text: str, groups: dict[str, list[str]]) -> list[str]:
    described = {row[0] for row in table_rows(text) if len(row) >= 2 and row[1]}
    return [f"{g}={o}" for g, options in groups.items() for o in options if f"`{g}={o}`" not in described]


def missing_in_readme(text: str, groups: dict[str, list[str]]) -> list[str]:
    rows = {row[0]: " | ".join(row[1:]) for row in table_rows(section(text, "Config tree")) if row}
    missing = []
    for g, options in groups.items():
        listed = rows.get(f"`{g}`", "")
        missing += [f"{g}={o}" for o in options if f"`{o}`" not in listed]
    return missing


def test_tree_has_groups() -> None:
    groups = config_options()
    assert {"task", "model", "data", "trainer", "experiment"} <= set(groups), groups


def test_configuring_md_lists_every_option() -> None:
    missing = missing_in_configuring(CONFIGURING.read_text(encoding="utf-8"), config_options())
    assert not missing, f"docs/configuring.md has no table row for: {', '.join(missing)}"


def test_readme_config_tree_lists_every_option() -> None:
    missing = missing_in_readme(README.read_text(encoding="utf-8"), config_options())
    assert not missing, f"README.md's Config tree table does not list: {', '.join(missing)}"


def test_checks_can_fail(tmp_path: Path) -> None:
    """A tree with an option the docs do not know is reported by name, in both checks."""
    (tmp_path / "task").mkdir()
    (tmp_path / "task" / "cls.yaml").write_text("{}\n")
    (tmp_path / "task" / "no_such_option.yaml").write_text("{}\n")
    groups = config_options(tmp_path)
    assert groups == {"task": ["cls", "no_such_option"]}
    assert missing_in_configuring(CONFIGURING.read_text(encoding="utf-8"), groups) == ["task=no_such_option"]
    assert missing_in_readme(README.read_text(encoding="utf-8"), groups) == ["task=no_such_option"]
