"""Learning figures: `trl run` for several seeds; prints a markdown table.

Usage: .venv/bin/python benchmarks/learning.py --env CartPole-v1 --algo dqn --model gpt --seeds 0,1,2
Runs go to runs/bench-<env>-<algo>-<model>-s<seed>/ (removed first).
"""

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--env", default="CartPole-v1")
    p.add_argument("--algo", default="dqn")
    p.add_argument("--model", default="gpt")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--root", default="runs")
    p.add_argument("extra", nargs="*", help="extra `trl run` options after --")
    a = p.parse_args()
    trl = str(Path(sys.executable).with_name("trl"))
    rows = []
    for seed in [int(s) for s in a.seeds.split(",")]:
        name = f"bench-{a.env}-{a.algo}-{a.model}-s{seed}"
        shutil.rmtree(Path(a.root) / name, ignore_errors=True)
        cmd = [trl, "run", "--env", a.env, "--algo", a.algo, "--model", a.model, "--seed", str(seed),
               "--name", name, "--root", a.root, *a.extra]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        report = json.loads((Path(a.root) / name / "report.json").read_text())
        rows.append((seed, report, wall))
    print("| seed | params | solved | best eval mean (100 ep) | env steps | wall s (process) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for seed, r, wall in rows:
        print(f"| {seed} | {r['parameters']:,} | {r['solved']} | {r['best']['mean_return']:.1f} "
              f"± {r['best']['std_return']:.1f} | {r['env_steps']:,} | {wall:.0f} |")
    best = np.array([r["best"]["mean_return"] for _, r, _ in rows])
    print(f"\nmean over seeds: {best.mean():.1f} ± {best.std():.1f}")


if __name__ == "__main__":
    main()
