"""The demo's training on a quiet machine and beside one other CPU-bound training job, side by side.

    python bench/shared_machine.py --repeats 2 [--variant 'workers=auto' --variant 'data.num_workers=2' ...]

Each variant is a list of objmtl-train overrides added to make demo's training command
(``experiment=cls_resnet18_synth`` on the 4000-image synthetic set); ``-`` is the plain command. For each
variant and repeat it times the command alone, then again while a second training job (the same command,
``trainer.max_epochs=100``, its own run directory) runs beside it, and prints the wall times, their medians,
the test accuracy and the shared / quiet ratio. Environment variables of a variant go first:
``OMP_NUM_THREADS=1 data.num_workers=1``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
DEMO = ["experiment=cls_resnet18_synth", "trainer.enable_progress_bar=false", "logger=csv"]


def _split(variant: str) -> tuple[dict[str, str], list[str]]:
    env, args = {}, []
    for word in variant.split():
        if word == "-":
            continue
        key, _, value = word.partition("=")
        (env.__setitem__(key, value) if key.isupper() else args.append(word))
    return env, args


def _train(data: Path, run: Path, variant: str) -> tuple[float, float | None]:
    env, args = _split(variant)
    start = time.perf_counter()
    result = subprocess.run([str(BIN / "objmtl-train"), *DEMO, f"data.root={data}", f"hydra.run.dir={run}", *args],
                            capture_output=True, text=True, env={**os.environ, **env})
    wall = time.perf_counter() - start
    if result.returncode:
        sys.exit(f"objmtl-train failed ({variant}):\n{result.stderr[-2000:]}")
    test = json.loads((run / "metrics.json").read_text()).get("test", {})
    return wall, test.get("test/acc")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--variant", action="append", default=None, help="overrides (and ENV=value) of one variant")
    p.add_argument("--data", type=Path, default=None, help="the synthetic set (default: written to a temp folder)")
    p.add_argument("--no-shared", action="store_true", help="quiet runs only")
    args = p.parse_args()
    variants = args.variant or ["-"]
    tmp = Path(tempfile.mkdtemp(prefix="objmtl-shared-"))
    data = args.data or tmp / "synth"
    if not (data / "meta.json").is_file():
        subprocess.run([str(BIN / "objmtl-data"), "synth", "--out", str(data), "--n", "4000", "--seed", "0"],
                       check=True, capture_output=True)
    rows = []
    try:
        for variant in variants:
            for shared in ([False] if args.no_shared else [False, True]):
                walls, accs = [], []
                for r in range(args.repeats):
                    other = None
                    if shared:  # the neighbour: the same training with the defaults, for longer
                        other = subprocess.Popen([str(BIN / "objmtl-train"), *DEMO, f"data.root={data}",
                                                  f"hydra.run.dir={tmp / 'other'}", "trainer.max_epochs=100"],
                                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                        time.sleep(20)  # past its start-up, into training
                    try:
                        wall, acc = _train(data, tmp / f"run{len(rows)}_{r}", variant)
                    finally:
                        if other is not None:
                            other.kill()
                            other.wait()
                            shutil.rmtree(tmp / "other", ignore_errors=True)
                    walls.append(wall)
                    accs.append(acc)
                    print(f"{variant:40s} {'shared' if shared else 'quiet':6s} run {r}: {wall:6.1f} s, "
                          f"test acc {acc}", flush=True)
                rows.append((variant, shared, statistics.median(walls), walls, accs))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n{'variant':40s} {'quiet s':>8s} {'shared s':>9s} {'ratio':>6s}")
    for variant in variants:
        quiet = next(r[2] for r in rows if r[0] == variant and not r[1])
        shared = next((r[2] for r in rows if r[0] == variant and r[1]), None)
        ratio = f"{shared / quiet:6.2f}" if shared else "     -"
        print(f"{variant:40s} {quiet:8.1f} {shared if shared else float('nan'):9.1f} {ratio}")


if __name__ == "__main__":
    main()
