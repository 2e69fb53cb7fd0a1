"""How fast the commands answer a wrong path (and ``--help``): wall seconds of the console scripts.

    .venv/bin/python bench/cli_startup.py              # 5 runs per command
    .venv/bin/python bench/cli_startup.py --runs 11 --bin .venv/bin

Each command runs ``--runs`` times as a subprocess (round robin, so every command sees the same machine
state), in a temporary folder holding ``notes.txt`` (a text file) and nothing else, with the console
scripts of ``--bin`` (default: the folder of this interpreter, i.e. the venv's). Prints a markdown table
of median / min / max wall seconds per command, its exit status, and whether stderr was the one
``error: ...`` line (error cases) or empty (``--help``). Exits 1 when a case broke that rule or gave
another exit status than expected (2 for errors, 0 for help).

The goal (issue 18): a wrong path answers in under 1.5 s on 2 cores, because the commands check
their paths before importing torch, Lightning, Hydra, albumentations, onnx or matplotlib.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# (command line, expected exit status); status 2 cases must print exactly one `error:` line
CASES: list[tuple[str, int]] = [
    ("objmtl-test missing_dir", 2),
    ("objmtl-export onnx notes.txt --out x.onnx", 2),
    ("objmtl-export onnx missing.ckpt --out x.onnx", 2),
    ("objmtl-data inspect missing/", 2),
    ("objmtl-data browse missing/ --out viz", 2),
    ("objmtl-data convert --format imagefolder --src missing --out shards", 2),
    ("objmtl-predict missing.ckpt missing_input", 2),
    ("objmtl-ckpt show missing.ckpt", 2),
    ("objmtl-test --help", 0),
    ("objmtl-export onnx --help", 0),
    ("objmtl-data --help", 0),
    ("objmtl-predict --help", 0),
    ("objmtl-ckpt --help", 0),
    ("objmtl-doctor --help", 0),
]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5, help="runs per command (default 5)")
    p.add_argument("--bin", type=Path, default=Path(sys.executable).parent,
                   help="folder of the objmtl-* console scripts (default: this interpreter's)")
    args = p.parse_args()
    times: dict[str, list[float]] = {cmd: [] for cmd, _ in CASES}
    seen: dict[str, tuple[int, str]] = {}
    broken: list[str] = []
    with tempfile.TemporaryDirectory(prefix="objmtl-cli-startup-") as tmp:
        (Path(tmp) / "notes.txt").write_text("not a checkpoint\n")
        for _ in range(args.runs):
            for cmd, expected in CASES:
                name, *rest = cmd.split()
                start = time.perf_counter()
                done = subprocess.run([str(args.bin / name), *rest], cwd=tmp, capture_output=True, text=True)
                times[cmd].append(time.perf_counter() - start)
                lines = done.stderr.strip().splitlines()
                ok = (len(lines) == 1 and lines[0].startswith("error: ")) if expected == 2 else not lines
                seen[cmd] = (done.returncode, lines[0] if lines else "")
                if done.returncode != expected or not ok:
                    broken.append(f"{cmd}: exit {done.returncode}, stderr {done.stderr.strip()[-300:]!r}")
    print(f"{args.runs} runs per command, wall seconds\n")
    print("| command | exit | median | min | max | stderr |")
    print("|---|---:|---:|---:|---:|---|")
    for cmd, _ in CASES:
        t = times[cmd]
        code, line = seen[cmd]
        print(f"| `{cmd}` | {code} | {statistics.median(t):.2f} | {min(t):.2f} | {max(t):.2f} | "
              f"{('`' + line + '`') if line else '-'} |")
    for b in dict.fromkeys(broken):
        print(f"BROKEN: {b}", file=sys.stderr)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
