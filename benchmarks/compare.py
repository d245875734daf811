"""The transformer-vs-MLP experiment: `trl run` per model and seed at the same budget, then a
100-episode evaluation of each run's best checkpoint; prints a markdown table and plots curves.

Usage:
  .venv/bin/python benchmarks/compare.py --env CartPole-v1 --algo dqn --plot docs/cartpole_dqn.png
  .venv/bin/python benchmarks/compare.py --env CartPole-v1 --algo ppo --plot docs/cartpole_ppo.png
  .venv/bin/python benchmarks/compare.py --env Breakout-ram --algo ppo --plot docs/breakout_ppo.png
Runs go to <root>/<env>-<algo>-<model>-s<seed>/ and are reused if complete (--fresh reruns them).
Options after `--` go to every `trl run` (the budget is the preset's unless given there).
"""

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from transformer_rl.evaluate.plots import plot_runs


def run_one(trl: str, root: Path, env: str, algo: str, model: str, seed: int, extra: list[str],
            fresh: bool) -> dict:
    name = f"{env}-{algo}-{model}-s{seed}"
    run_dir = root / name
    if fresh or not (run_dir / "final-eval.json").exists():
        shutil.rmtree(run_dir, ignore_errors=True)
        subprocess.run([trl, "run", "--env", env, "--algo", algo, "--model", model, "--seed", str(seed),
                        "--name", name, "--root", str(root), *extra], check=True, stdout=subprocess.DEVNULL)
        mode = json.loads((run_dir / "config.json").read_text())["eval_mode"] or "greedy"
        subprocess.run([trl, "eval", str(run_dir / "checkpoints" / "best"), "--episodes", "100",
                        "--mode", mode, "--seed", "123456789", "--report", str(run_dir / "final-eval.json")],
                       check=True, stdout=subprocess.DEVNULL)
    report = json.loads((run_dir / "report.json").read_text())
    report["final"] = json.loads((run_dir / "final-eval.json").read_text())
    report["dir"] = run_dir
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="CartPole-v1")
    p.add_argument("--algo", default="dqn")
    p.add_argument("--models", default="gpt,mlp")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--root", type=Path, default=Path("runs/experiment"))
    p.add_argument("--plot", type=Path, help="write the learning curves here (PNG)")
    p.add_argument("--fresh", action="store_true", help="rerun runs that are already complete")
    p.add_argument("extra", nargs="*", help="options for `trl run`, after --")
    a = p.parse_args()
    trl = str(Path(sys.executable).with_name("trl"))
    seeds = [int(s) for s in a.seeds.split(",")]
    results = {m: [run_one(trl, a.root, a.env, a.algo, m, s, a.extra, a.fresh) for s in seeds]
               for m in a.models.split(",")}
    print(f"### {a.env}, {a.algo.upper()}, seeds {a.seeds}\n")
    print("| model | seed | params | solved | env steps | wall s | best eval (iter) | final eval, 100 ep |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for model, reports in results.items():
        for seed, r in zip(seeds, reports, strict=True):
            f, b = r["final"], r["best"]
            solved = "-" if r["stop_at"] is None else "yes" if r["solved"] else "no"
            print(f"| {model} | {seed} | {r['parameters']:,} | {solved} | "
                  f"{r['env_steps']:,} | {r['wall_s']:.0f} | {b['mean_return']:.1f} ({b['iteration']}) | "
                  f"{f['mean_return']:.1f} ± {f['std_return']:.1f} |")
    print("\n| model | params | solved | env steps | wall s | final eval (mean ± std over seeds) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for model, reports in results.items():
        steps = np.array([r["env_steps"] for r in reports])
        wall = np.array([r["wall_s"] for r in reports])
        final = np.array([r["final"]["mean_return"] for r in reports])
        solved = "-" if reports[0]["stop_at"] is None else f"{sum(bool(r['solved']) for r in reports)}/{len(reports)}"
        print(f"| {model} | {reports[0]['parameters']:,} | {solved} | "
              f"{steps.mean():,.0f} ± {steps.std():,.0f} | {wall.mean():.0f} ± {wall.std():.0f} | "
              f"{final.mean():.1f} ± {final.std():.1f} |")
    if a.plot:
        plot_runs(a.plot, [r["dir"] for reports in results.values() for r in reports],
                  title=f"{a.env} {a.algo.upper()}: GPT vs MLP", threshold=reports[0]["stop_at"])
        print(f"\ncurves: {a.plot}")


if __name__ == "__main__":
    main()
