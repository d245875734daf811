"""Watch the size on disk of run directories while they run: the largest size each one reached.

Every --every seconds it adds up the bytes of every file under each directory in FOLDER (a run
that appears later is picked up; one that finishes and is removed keeps its figures) and writes
the largest total seen per run to --json, rewritten after each sample, so a stopped watcher still
leaves its figures. It answers "does a compact run stay under 5 MB at every instant":

  .venv/bin/python benchmarks/run_size.py benchmarks/sweep/breakout-ppo-2m/runs --every 2 \
      --json run-sizes.json --until 150
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def tree_bytes(root: Path) -> int:
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except FileNotFoundError:  # replaced or removed between the listing and the stat
                pass
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="the folder whose subdirectories are runs")
    parser.add_argument("--every", type=float, default=2.0, help="seconds between samples")
    parser.add_argument("--json", type=Path, required=True, help="where the figures go")
    parser.add_argument("--until", type=float, default=60.0, help="minutes to watch")
    args = parser.parse_args()
    runs: dict[str, dict] = {}
    if args.json.exists():  # a restarted watcher continues the figures it left
        runs = json.loads(args.json.read_text())["runs"]
    stop = time.time() + 60 * args.until
    while time.time() < stop:
        now = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        for run in sorted(p for p in args.folder.iterdir() if p.is_dir()) if args.folder.is_dir() else []:
            size = tree_bytes(run)
            seen = runs.setdefault(run.name, {"max_bytes": 0, "samples": 0, "first": now})
            seen["samples"] += 1
            seen["last"] = now
            if size > seen["max_bytes"]:
                seen["max_bytes"], seen["max_at"] = size, now
        tmp = args.json.with_suffix(".tmp")
        tmp.write_text(json.dumps({"every_s": args.every, "runs": runs}, indent=1) + "\n")
        tmp.replace(args.json)
        time.sleep(args.every)


if __name__ == "__main__":
    main()
