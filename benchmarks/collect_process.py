"""Whole-process collection speed: `trl collect` next to a plain EnvPool script, same envs.

Each mode is one fresh Python process timed from launch to exit (imports, pool build and the
final flush included), taking the same number of env steps with uniform random actions. Modes
run interleaved over rounds; medians are reported, with ratios to the raw sync script.

  .venv/bin/python benchmarks/collect_process.py --env CartPole-v1 --num-envs 128 --steps 3000000 --rounds 3
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RAW = """
import numpy as np, envpool
from transformer_rl.envs import make_pool, resolve
spec = resolve({env!r})
pool = make_pool(spec, {n}, 0, {batch})
rng = np.random.default_rng(0)
steps = 0
if {batch} == {n}:
    pool.reset()
    while steps < {steps}:
        pool.step(rng.integers(0, spec.num_actions, {n}, dtype=np.int32))
        steps += {n}
else:
    pool.async_reset()
    while steps < {steps}:
        ids = pool.recv()[-1]["env_id"]
        pool.send(rng.integers(0, spec.num_actions, len(ids), dtype=np.int32), ids)
        steps += len(ids)
"""


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="CartPole-v1")
    p.add_argument("--num-envs", type=int, default=128)
    p.add_argument("--steps", type=int, default=3_000_000)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    n, half = args.num_envs, args.num_envs // 2
    trl = [sys.executable, "-m", "transformer_rl", "collect", "--env", args.env, "--steps", str(args.steps),
           "--num-envs", str(n)]
    tmp = Path(tempfile.mkdtemp(prefix="trl-collect-process-"))
    modes = {
        "raw EnvPool sync": lambda: timed([sys.executable, "-c", RAW.format(env=args.env, n=n, batch=n,
                                                                            steps=args.steps)]),
        "raw EnvPool async": lambda: timed([sys.executable, "-c", RAW.format(env=args.env, n=n, batch=half,
                                                                             steps=args.steps)]),
        "trl collect (default)": lambda: timed([*trl, "--out", str(tmp / "default")]),
        "trl collect --batch-size N/2": lambda: timed([*trl, "--batch-size", str(half), "--out", str(tmp / "async")]),
    }
    seconds: dict[str, list[float]] = {m: [] for m in modes}
    try:
        for r in range(args.rounds):
            for mode, fn in modes.items():
                shutil.rmtree(tmp / "default", ignore_errors=True)
                shutil.rmtree(tmp / "async", ignore_errors=True)
                seconds[mode].append(fn())
                print(f"round {r + 1} {mode}: {seconds[mode][-1]:.2f} s", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base = float(np.median(seconds["raw EnvPool sync"]))
    print(f"\n{args.env}, {n} envs, {args.steps:,} env steps, whole process, medians of {args.rounds} rounds")
    print("| mode | wall s | env steps/s | x raw sync |")
    print("| --- | --- | --- | --- |")
    for mode, values in seconds.items():
        s = float(np.median(values))
        print(f"| {mode} | {s:.2f} | {args.steps / s:,.0f} | {base / s:.2f} |")


if __name__ == "__main__":
    main()
