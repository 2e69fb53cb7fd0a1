"""A new user's first run of each task kind: ``objmtl-train task=T`` with no other argument, timed.

    python bench/first_run.py [--task det --task seg ...] [--variant 'trainer.max_epochs=3' ...] [--fresh-cache]
        [--keep DIR]

For each task (default: cls det seg pose mtl ssl reg inst) and variant (``-`` is the plain command), it runs
``objmtl-train task=T VARIANT`` in a temporary run directory and prints the wall time of the whole command
(start-up, writing the synthetic set when ``--fresh-cache`` gives an empty cache, training, validation, the
test of the best checkpoint, plots), the run's main metric (best validation value) and its test metrics.
Environment variables of a variant go first: ``OMP_NUM_THREADS=1 data.num_workers=1``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from shared_machine import _split  # bench/ is on sys.path when this script runs

BIN = Path(sys.executable).parent
TASKS = ["cls", "det", "seg", "pose", "mtl", "ssl", "reg", "inst"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", action="append", default=None, choices=TASKS)
    p.add_argument("--variant", action="append", default=None, help="overrides (and ENV=value) of one variant")
    p.add_argument("--fresh-cache", action="store_true",
                   help="an empty OBJMTL_CACHE for each run: the synthetic set is written inside the timed command")
    p.add_argument("--keep", type=Path, default=None, help="move each run directory here instead of deleting it")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="objmtl-first-run-"))
    rows = []
    try:
        for task in args.task or TASKS:
            for variant in args.variant or ["-"]:
                env, extra = _split(variant)
                run = tmp / f"{task}-{len(rows)}"
                if args.fresh_cache:
                    env["OBJMTL_CACHE"] = str(tmp / f"cache-{len(rows)}")
                cmd = [str(BIN / "objmtl-train"), f"task={task}", *extra, f"hydra.run.dir={run}",
                       "trainer.enable_progress_bar=false"]
                start = time.perf_counter()
                result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env})
                wall = time.perf_counter() - start
                if result.returncode:
                    print(f"{task} {variant}: objmtl-train failed\n{result.stderr[-2000:]}", flush=True)
                    continue
                summary = json.loads((run / "metrics.json").read_text())
                best = summary.get("best") or {}
                test = {k: round(v, 3) for k, v in summary.get("test", {}).items() if not k.endswith("loss")}
                rows.append((task, variant, wall, best.get("metric"), best.get("value"), test))
                print(f"{task:5s} {variant:40s} {wall:7.1f} s  {best.get('metric')} = {best.get('value', 0):.3f}  "
                      f"test {test}", flush=True)
                if args.keep:
                    args.keep.mkdir(parents=True, exist_ok=True)
                    shutil.move(run, args.keep / run.name)
                else:
                    shutil.rmtree(run, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n{'task':5s} {'variant':40s} {'wall s':>7s}  best")
    for task, variant, wall, metric, value, _ in rows:
        print(f"{task:5s} {variant:40s} {wall:7.1f}  {metric} = {value or 0:.3f}")


if __name__ == "__main__":
    main()
