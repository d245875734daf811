"""Offline sequence modelling on one dataset: Decision Transformer vs BC vs %BC, 3 seeds each.

Each variant trains with `trl train` and plays 100 fresh episodes with `trl eval`; the DT is
also played for a sweep of target returns (achieved vs target). Prints markdown tables and
plots the sweep. Finished trainings and evaluations are reused (delete a directory to redo it).

Usage:
  .venv/bin/python benchmarks/dt_experiment.py --data runs/dt/cartpole-dqn-replay/data \\
      --root runs/dt/offline --target 500 --sweep 50,100,200,300,400,500 --plot docs/cartpole_dt_targets.png
  (weak data) ... --below-return 200 --root runs/dt/weak
Options after `--` go to every `trl train` (e.g. -- --updates 3000).
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

VARIANTS = {"dt": ["--algo", "dt"], "bc": ["--algo", "bc"], "bc10": ["--algo", "bc", "--top-percent", "10"]}


def trl(*args: str) -> None:
    subprocess.run([str(Path(sys.executable).with_name("trl")), *map(str, args)], check=True,
                   stdout=subprocess.DEVNULL)


def evaluate(ckpt: Path, name: str, episodes: int, mode: str, target: float | None) -> dict:
    out = ckpt / f"eval-{name}.json"
    if not out.exists():
        extra = ["--target-return", target] if target is not None else []
        trl("eval", ckpt, "--episodes", episodes, "--mode", mode, "--seed", 123456789, "--report", out, *extra)
    return json.loads(out.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--variants", default="dt,bc,bc10")
    p.add_argument("--target", type=float, required=True, help="the DT's target in the headline eval")
    p.add_argument("--sweep", default="", help="comma-separated targets for the DT sweep")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--sweep-episodes", type=int, default=50)
    p.add_argument("--mode", default="greedy")
    p.add_argument("--below-return", type=float, help="train only on episodes below this return")
    p.add_argument("--plot", type=Path)
    p.add_argument("extra", nargs="*", help="options for `trl train`, after --")
    a = p.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    sweep = [float(t) for t in a.sweep.split(",") if t]
    below = ["--below-return", a.below_return] if a.below_return is not None else []
    a.root.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict]] = {}
    for variant in a.variants.split(","):
        for seed in seeds:
            ckpt = a.root / f"{variant}-s{seed}"
            if not (ckpt / "config.json").exists():
                trl("train", "--data", a.data, "--out", ckpt, "--seed", seed, *VARIANTS[variant], *below, *a.extra)
            is_dt = variant == "dt"
            row = {"seed": seed, "headline": evaluate(ckpt, "headline", a.episodes, a.mode,
                                                      a.target if is_dt else None)}
            row["sweep"] = {t: evaluate(ckpt, f"target-{t:g}", a.sweep_episodes, a.mode, t)["mean_return"]
                            for t in (sweep if is_dt else [])}
            results.setdefault(variant, []).append(row)
    returns = data_returns(a.data, a.below_return)
    print(f"### {a.data}: {len(returns)} episodes trained on, return mean {returns.mean():.1f}, "
          f"best {returns.max():.1f}\n")
    print(f"| variant | seed | final eval, {a.episodes} ep (DT target {a.target:g}) |")
    print("| --- | --- | --- |")
    for variant, rows in results.items():
        for r in rows:
            h = r["headline"]
            print(f"| {variant} | {r['seed']} | {h['mean_return']:.1f} ± {h['std_return']:.1f} |")
    print("\n| variant | final eval (mean ± std over seeds) | seeds >= 475 |")
    print("| --- | --- | --- |")
    for variant, rows in results.items():
        means = np.array([r["headline"]["mean_return"] for r in rows])
        print(f"| {variant} | {means.mean():.1f} ± {means.std():.1f} | {(means >= 475).sum()}/{len(means)} |")
    if sweep:
        print("\n| target | " + " | ".join(f"DT seed {r['seed']}" for r in results["dt"]) + " |")
        print("| --- |" + " --- |" * len(results["dt"]))
        for t in sweep:
            print(f"| {t:g} | " + " | ".join(f"{r['sweep'][t]:.1f}" for r in results["dt"]) + " |")
    if a.plot and sweep:
        plot(a.plot, results, sweep, returns)
        print(f"\nplot: {a.plot}")


def data_returns(data: Path, below: float | None) -> np.ndarray:
    from transformer_rl.datasets import load

    returns = load(data).episode_returns()
    return returns[returns < below] if below is not None else returns


def plot(out: Path, results: dict, sweep: list[float], returns: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    achieved = np.array([[r["sweep"][t] for t in sweep] for r in results["dt"]])
    ax.plot(sweep, achieved.mean(0), marker="o", color="tab:blue", label="DT (mean of seeds)")
    ax.fill_between(sweep, achieved.min(0), achieved.max(0), color="tab:blue", alpha=0.2, label="DT seed range")
    ax.plot(sweep, sweep, linestyle="--", color="grey", linewidth=1, label="achieved = target")
    for variant, colour in (("bc", "tab:orange"), ("bc10", "tab:green")):
        if variant in results:
            mean = np.mean([r["headline"]["mean_return"] for r in results[variant]])
            ax.axhline(mean, color=colour, linewidth=1.5, label=f"{'BC' if variant == 'bc' else '10% BC'}")
    ax.axhline(returns.max(), color="black", linestyle=":", linewidth=1, label="best episode in the data")
    ax.set_xlabel("target return")
    ax.set_ylabel("achieved return (mean over episodes)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
