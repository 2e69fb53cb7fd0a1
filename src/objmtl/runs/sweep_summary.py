"""``SweepSummary``: after ``objmtl-train -m ...``, one table of every job's swept values and main metric.

A Hydra callback (``hydra.callbacks`` in ``conf/hydra/default.yaml``). It reads what each job wrote into
its own run directory (``overrides.yaml``, ``metrics.json``), so it works with any launcher, including
ones that run the jobs in other processes or on other machines (submitit). Writes
``SWEEP_DIR/summary.csv`` and prints the table, best job first.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

__all__ = ["SweepSummary", "collect_jobs", "write_summary"]


def collect_jobs(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job directory under ``sweep_dir``: ``job``, its overrides as a dict, ``metric``,
    ``value`` (None for a job that wrote no best checkpoint) and ``run_dir``."""
    rows = []
    for overrides_file in sorted(sweep_dir.glob("*/overrides.yaml"), key=lambda p: (len(p.parent.name), p.parent.name)):
        run_dir = overrides_file.parent
        overrides = yaml.safe_load(overrides_file.read_text()) or []
        metrics_file = run_dir / "metrics.json"
        best = (json.loads(metrics_file.read_text()).get("best") or {}) if metrics_file.is_file() else {}
        rows.append({"job": run_dir.name, "overrides": dict(o.split("=", 1) for o in overrides if "=" in o),
                     "metric": best.get("metric"), "value": best.get("value"), "run_dir": str(run_dir)})
    return rows


def write_summary(rows: list[dict[str, Any]], *, out: Path, mode: str = "max") -> list[str]:
    """Writes ``out`` (CSV: job, each override key that varies, metric, value, run_dir), best first;
    returns the column names."""
    keys = sorted({k for r in rows for k in r["overrides"]})
    varying = [k for k in keys if len({r["overrides"].get(k) for r in rows}) > 1] or keys
    sign = -1.0 if mode == "max" else 1.0
    ordered = sorted(rows, key=lambda r: (r["value"] is None, sign * (r["value"] or 0.0)))
    columns = ["job", *varying, "metric", "value", "run_dir"]
    with out.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for r in ordered:
            writer.writerow([r["job"], *(r["overrides"].get(k, "") for k in varying), r["metric"] or "",
                             "" if r["value"] is None else f"{r['value']:.6g}", r["run_dir"]])
    return columns


class SweepSummary(Callback):
    """Writes and prints the summary of a multirun when it ends."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        rows = collect_jobs(sweep_dir)
        if not rows:
            return
        mode = str(config.task.get("main_mode", "max")) if "task" in config else "max"
        out = sweep_dir / "summary.csv"
        columns = write_summary(rows, out=out, mode=mode)
        _print(out, columns)


def _print(csv_path: Path, columns: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"sweep summary (best first): {csv_path}")
    for c in columns[:-1]:
        table.add_column(c, justify="right" if c in ("value", "job") else "left")
    with csv_path.open() as f:
        for row in list(csv.reader(f))[1:]:
            table.add_row(*row[:-1])
    Console(width=160).print(table)
