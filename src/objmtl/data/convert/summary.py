"""The end of a conversion: the account table, and the data config to train on the result."""

from __future__ import annotations

import re
from pathlib import Path

from rich.console import Console
from rich.table import Table

from objmtl.data.convert.engine import ConversionReport
from objmtl.data.schema import Meta

__all__ = ["LOCAL_PREFIX", "print_report", "write_data_config"]


def print_report(report: ConversionReport, *, console: Console | None = None) -> None:
    d = report.to_dict()
    table = Table(title="conversion account", title_justify="left")
    table.add_column("")
    table.add_column("count", justify="right")
    table.add_row("images read", str(d["images_read"]))
    for split, n in d["samples_written"].items():
        table.add_row(f"  samples written: {split}", str(n))
    table.add_row("  images dropped", str(d["images_dropped"]))
    table.add_row("instances read", str(d["instances_read"]))
    table.add_row("  instances written", str(d["instances_written"]))
    table.add_row("  instances dropped", str(d["instances_dropped"]))
    for reason, n in sorted(d["ignored"].items()):
        table.add_row(f"ignored: {reason}", str(n))
    for kind in ("dropped", "fixed"):
        for reason, n in sorted(d[kind].items()):
            table.add_row(f"{kind}: {reason}", str(n))
    (console or Console(width=120)).print(table)


DATA_CONFIG_OF_TASK = {"cls": "shards", "det": "det", "seg": "seg", "pose": "pose"}
"""The data config (``conf/data/NAME.yaml``) whose transforms fit each task's annotations."""


DET_DEFAULTS = ("image_size: 512  # the longest side, as the images are fed (data.image_size=N to change)\n"
                "group_by_aspect: true  # batches of one orientation: less padding\n"
                "num_workers: 2  # loader processes (data=det has 0, for its small synthetic set on a CPU)\n")


SEG_DEFAULTS = ("image_size: 512  # the training crop side (data.image_size=N to change)\n"
                "num_workers: 2  # loader processes (data=seg has 0, for its small synthetic set on a CPU)\n")


POSE_DEFAULTS = ("image_size: [256, 192]  # (h, w) of a person crop, SimpleBaseline's COCO size\n"
                 "num_workers: 2  # loader processes (data=pose has 0, for its small synthetic set on a CPU)\n")


def _task_of(meta: Meta) -> str:
    """The first task these shards carry that objmtl-train has a config for (built-in kinds in the order
    below, then any other kind in ``meta.tasks`` order that has ``conf/task/<kind>.yaml``)."""
    from objmtl.locations import CONFIG_DIR

    built_in = ("pose", "det", "seg", "cls")  # keypoints are converted to train pose; boxes come with them
    for task in [*(t for t in built_in if t in meta.tasks), *(t for t in meta.tasks if t not in built_in)]:
        if (CONFIG_DIR / "task" / f"{task}.yaml").is_file():
            return task
    return ""


def _data_config_of(task: str) -> str:
    """The data config to train ``task`` on a converted shard set: the built-in kinds' table, else a kind's own
    ``conf/data/<kind>_shards.yaml`` when it ships one, else ``shards``."""
    from objmtl.locations import CONFIG_DIR

    if task in DATA_CONFIG_OF_TASK:
        return DATA_CONFIG_OF_TASK[task]
    return f"{task}_shards" if (CONFIG_DIR / "data" / f"{task}_shards.yaml").is_file() else "shards"


LOCAL_PREFIX = "local_"
"""Written data configs are named ``local_<folder>``: no built-in data config starts so (a test keeps it
true), so ``--config-dir OUT/conf data=local_<folder>`` can never pick a built-in file of the same name
(Hydra's search path puts the packaged configs first)."""


def write_data_config(out: Path, meta: Meta) -> tuple[Path, list[str]]:
    """Writes ``OUT/conf/data/local_<name>.yaml``; returns it with the objmtl-train commands that train on OUT
    (empty when no objmtl-train task fits the shards): the one using that file, and one without it."""
    out = Path(out).resolve()
    name = LOCAL_PREFIX + (re.sub(r"[^A-Za-z0-9_]+", "_", out.name).strip("_") or "converted")
    path = out / "conf" / "data" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    task = _task_of(meta)
    if not task:
        note = (f"# These shards carry {', '.join(meta.tasks)}; objmtl-train has no task for them yet.\n")
        path.write_text(note + "defaults:\n  - shards\n  - _self_\n\n" + f"root: {out}\n", encoding="utf-8")
        return path, []
    base = _data_config_of(task)
    commands = [f"objmtl-train --config-dir {out / 'conf'} task={task} data={name}",
                f"objmtl-train task={task} data={base} data.root={out}"]
    path.write_text(
        f"# Written by objmtl-data convert. Train on it with:\n#   {commands[0]}\n"
        f"# or, without this file: {commands[1]}\n"
        f"defaults:\n  - {base}\n  - _self_\n\n"
        f"root: {out}\n" + {"det": DET_DEFAULTS, "seg": SEG_DEFAULTS, "pose": POSE_DEFAULTS}.get(task, ""), encoding="utf-8")
    return path, commands
