"""Env steps/s of `trl run` with 1, 2, ... ranks under torchrun, side by side in one sitting.

Each round runs the same `trl run` once per rank count (each in a fresh run directory), so
machine noise hits every count alike; medians over rounds are reported. The steady rate is taken
from metrics.jsonl between iteration `--skip` and the second to last (the first iterations build
the pools and the model; the last one evaluates).

  .venv/bin/python benchmarks/torchrun_scaling.py --ranks 1,2 --rounds 2 -- \
      --env Breakout-ram --algo ppo --iterations 24 --eval-every 100
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def one_run(ranks: int, run_args: list[str], root: Path, skip: int) -> dict[str, float]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks)]
    cmd = [*launcher, "-m", "transformer_rl", "run", *run_args, "--root", str(root), "--name", f"r{ranks}"]
    start = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    whole = time.perf_counter() - start
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    rows = [json.loads(line) for line in (root / f"r{ranks}" / "metrics.jsonl").read_text().splitlines()]
    a, b = rows[skip - 1], rows[-2]
    return {"steady_steps_per_s": (b["env_steps"] - a["env_steps"]) / (b["wall_s"] - a["wall_s"]),
            "whole_steps_per_s": rows[-1]["env_steps"] / whole, "env_steps": rows[-1]["env_steps"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", default="1,2", help="Comma-separated rank counts.")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip", type=int, default=3, help="Iterations left out of the steady rate.")
    parser.add_argument("run_args", nargs=argparse.REMAINDER, help="`trl run` options, after --.")
    args = parser.parse_args()
    run_args = [a for a in args.run_args if a != "--"]
    counts = [int(n) for n in args.ranks.split(",")]
    results: dict[int, list[dict[str, float]]] = {n: [] for n in counts}
    for i in range(args.rounds):
        for n in counts:
            with tempfile.TemporaryDirectory() as tmp:
                results[n].append(one_run(n, run_args, Path(tmp), args.skip))
            print(f"round {i + 1}, {n} rank(s): {results[n][-1]}", flush=True)
    base = np.median([r["steady_steps_per_s"] for r in results[counts[0]]])
    print(f"\n| ranks | steady env steps/s | x {counts[0]} rank(s) | whole run env steps/s |")
    print("|---|---|---|---|")
    for n in counts:
        steady = np.median([r["steady_steps_per_s"] for r in results[n]])
        whole = np.median([r["whole_steps_per_s"] for r in results[n]])
        print(f"| {n} | {steady:,.0f} | {steady / base:.2f} | {whole:,.0f} |")


if __name__ == "__main__":
    main()
