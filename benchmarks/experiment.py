"""Transformer vs dense net at matched sizes: `trl run` per (workload, family, size, seed).

Each run ends with a 100-episode evaluation of its best checkpoint (fresh env seeds). Its result
is committed as benchmarks/sweep/<workload>/<family>-<size>-s<seed>.json, which is what makes
the sweep resumable across sessions and machines: a finished result is skipped; an unfinished
run whose directory is still there is resumed by the same `trl run` command (never shortened),
one whose directory is gone starts again. `--jobs` runs that many at once, one process each.
PPO runs are compact (`--keep-data none --keep-checkpoints last`: the same metrics, a few MB) and
live in the repo while in flight, under benchmarks/sweep/<workload>/runs/, so that committing
them carries them to the next machine; a finished one leaves its result and its best model
(benchmarks/sweep/<workload>/checkpoints/). `--deadline M` stops every run cleanly M minutes from
now (SIGTERM: each stays at its last evaluated iteration) for the same command to resume.

  .venv/bin/python benchmarks/experiment.py run --workload cartpole-dqn --jobs 2
  .venv/bin/python benchmarks/experiment.py run --workload cartpole-dqn --context 1,2,4,8,16 --jobs 2
  .venv/bin/python benchmarks/experiment.py run --workload breakout-ppo-2m --jobs 2 --deadline 170
  .venv/bin/python benchmarks/experiment.py status --workload breakout-ppo-2m   # done / in flight / queued
  .venv/bin/python benchmarks/experiment.py report     # the table and the plots of what is finished
  .venv/bin/python benchmarks/experiment.py sizes      # every configuration and its exact count

The sizes vary width at depth 2 (GPT: context 8, 2 heads); parameter counts below are for
CartPole-v1 (4 inputs, 2 actions) and Breakout-ram (128 bytes, 4 actions). The family
gpt-feature is the GPT with one token per observation feature (`--model gpt --tokens feature`:
2 blocks across a step's features, 1 causal block across the 8 pooled steps); gpt-feature-k1
reads one observation (`--context 1`: the blocks across its features only).

A workload with a PLAN (breakout-ppo-2m: the Atari campaign's nine configurations) runs it when
neither --families nor --sizes is given; `status` then counts the whole campaign. The campaign's
next stages, breakout-ppo-10m and seaquest-ppo-2m, run each family's best 2M size, decided from
the committed results as soon as the family's sizes all have 3 seeds (`best_at_2m`); so

  .venv/bin/python benchmarks/experiment.py run --workload breakout-ppo-2m --workload breakout-ppo-10m \
      --workload seaquest-ppo-2m --jobs 2 --deadline M

runs the whole campaign over as many sessions as it takes: the plan is read again whenever a run
finishes, and a free slot takes a run begun before (a past session's in-flight state), else the
next run of the workload with the fewest going, so that a decided later stage advances beside the
last rows of an earlier one instead of waiting for them. Ctrl-C or SIGTERM stops it as the
deadline does.

The context ablation (`--context`) runs the GPT of ABLATION["gpt"] with `--context K` and, as
the control, the MLP of matched size fed the same K steps stacked (`--stack K`); its results go
to benchmarks/sweep/<workload>-context/.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "sweep"

# family -> size label -> model options
SIZES = {
    "gpt": {"w8": {"n_embd": 8}, "w16": {"n_embd": 16}, "w32": {"n_embd": 32}, "w48": {"n_embd": 48}},
    "mlp": {"h48": {"hidden": 48}, "h64": {"hidden": 64}, "h96": {"hidden": 96}, "h160": {"hidden": 160},
            "h240": {"hidden": 240}},  # h64: the default MLP of the earlier comparisons
    "gpt-feature": {f"w{c}": {"tokens": "feature", "n_embd": c} for c in (8, 16, 24, 32)},
    # one observation, attention across its features only: the seed's own history (none) and the
    # MLP's, at about a sixth of the context-8 model's cost per Breakout step (benchmarks/RESULTS.md)
    "gpt-feature-k1": {f"w{c}": {"tokens": "feature", "n_embd": c, "context": 1} for c in (8, 16, 24, 32)},
}
DEPTH = {"n_layer": 2}
# a workload's campaign: the families and sizes it runs (seeds 0-2) when neither --families nor
# --sizes is given (the others then run every size of gpt and mlp)
PLAN = {
    "breakout-ppo-2m": {"gpt": ("w8", "w16", "w32"), "mlp": ("h48", "h64", "h160"),
                        "gpt-feature-k1": ("w8", "w16", "w24")},
}
SEEDS = 3  # per configuration, before a family's best size is taken further


def decide_2m() -> dict[str, tuple[str | None, str]]:
    """Per family of the 2M plan: (its best size, or None; why). The best size has the highest
    mean final score once every planned size has SEEDS seeds; a feature-token family is decided
    after the others, and left out when its best mean is below every other family's best by
    more than that family's seed std."""
    results = [json.loads(path.read_text()) for path in (RESULTS / "breakout-ppo-2m").glob("*.json")]
    results = [r for r in results if r["seed"] < SEEDS]  # seeds 0-2 decide; more seeds change nothing
    best = {}
    for family, sizes in PLAN["breakout-ppo-2m"].items():
        finals = {size: [r["final"]["mean_return"] for r in results if (r["family"], r["size"]) == (family, size)]
                  for size in sizes}
        if all(len(scores) >= SEEDS for scores in finals.values()):
            size = max(sizes, key=lambda size: np.mean(finals[size]))
            best[family] = (size, np.mean(finals[size]), np.std(finals[size]))
    decided = {}
    for family in PLAN["breakout-ppo-2m"]:
        others = [best.get(f) for f in PLAN["breakout-ppo-2m"] if not f.startswith("gpt-feature")]
        if family not in best:
            decided[family] = (None, f"waits for {SEEDS} seeds of each of its 2M sizes")
        elif family.startswith("gpt-feature") and None in others:
            decided[family] = (None, "waits for the other families' best 2M sizes")
        elif family.startswith("gpt-feature") and all(best[family][1] < mean - std for _, mean, std in others):
            decided[family] = (None, "left out: its best 2M mean is below every other family's by more than "
                                     "their seed spread")
        else:
            decided[family] = (best[family][0], f"best at 2M: {best[family][1]:.1f} ± {best[family][2]:.1f}")
    return decided


def best_at_2m() -> dict[str, tuple[str, ...]]:
    """What breakout-ppo-10m and seaquest-ppo-2m run: each family's best size at 2M (decide_2m)."""
    return {family: (size,) for family, (size, _) in decide_2m().items() if size is not None}


PLAN_LATER = {"breakout-ppo-10m": best_at_2m, "seaquest-ppo-2m": best_at_2m}
ABLATION = {"gpt": "w32", "mlp": "h160", "gpt-feature": "w24"}  # 26,149, 27,365, 22,325 on CartPole-v1

# workload -> env, algo, extra `trl run` options (the budget is the preset's unless given)
WORKLOADS = {
    "cartpole-dqn": ("CartPole-v1", "dqn", []),
    "cartpole-ppo": ("CartPole-v1", "ppo", []),
    "breakout-ppo-2m": ("Breakout-ram", "ppo", []),
    # long runs evaluate within a budget: at most 10% of the env steps (the 2M preset took 11%)
    "breakout-ppo-10m": ("Breakout-ram", "ppo", ["--iterations", "2442", "--eval-budget", "0.1"]),
    "pong-ppo-2m": ("Pong-ram", "ppo", []),
    "seaquest-ppo-2m": ("Seaquest-ram", "ppo", []),
    # a minute-long check of the ledger itself (tests/test_compact.py)
    "cartpole-ppo-smoke": ("CartPole-v1", "ppo", ["--iterations", "60", "--eval-every", "10", "--eval-episodes", "4",
                                                  "--stop-at", "1000"]),
}


def options(model: dict[str, int]) -> list[str]:
    return [x for k, v in model.items() for x in (f"--{k.replace('_', '-')}", str(v))]


def model_kind(family: str) -> str:
    """`--model` of a family: gpt-feature is a GPT (its tokens are in its sizes' options)."""
    return family.split("-")[0]


def model_options(family: str, size: str, context: int | None) -> dict[str, int]:
    history = {} if context is None else {"context" if model_kind(family) == "gpt" else "stack": context}
    return {**SIZES[family][size], **DEPTH, **history}


def result_path(workload: str, family: str, size: str, seed: int, context: int | None = None) -> Path:
    if context is None:
        return RESULTS / workload / f"{family}-{size}-s{seed}.json"
    return RESULTS / f"{workload}-context" / f"{family}-{size}-k{context}-s{seed}.json"


def compact(workload: str) -> bool:
    """PPO runs are compact (no data/, only the last and best checkpoints: the same metrics, a
    few MB) and live in the repo while in flight, so that a commit carries them to the next
    machine; DQN learns from its replay in data/, so its runs stay under --root."""
    return WORKLOADS[workload][1] == "ppo"


COMPACT = ["--keep-data", "none", "--keep-checkpoints", "last"]
STOP = threading.Event()  # set at the deadline: every run is stopped cleanly and resumes next time
STOPPED_BY = ["the deadline"]  # or the signal that stopped the ledger, for its last lines
RUNNING: set[subprocess.Popen] = set()
LOCK = threading.Lock()


def _call(cmd: list[str]) -> bool:
    """Run ``cmd`` to its end (True), or until the deadline stops it (False)."""
    with LOCK:
        if STOP.is_set():
            return False
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        RUNNING.add(proc)
    code = proc.wait()
    with LOCK:
        RUNNING.discard(proc)
    if STOP.is_set() and code != 0:
        return False
    if code != 0:
        raise subprocess.CalledProcessError(code, cmd)
    return True


def run_dir_of(workload: str, out: Path, root: Path) -> Path:
    return (out.parent / "runs" if compact(workload) else root) / (out.parent.name + "-" + out.stem)


def run_one(workload: str, family: str, size: str, seed: int, context: int | None, root: Path) -> dict | None:
    """The result of one run (None if the deadline stopped it first: the same call resumes it)."""
    out = result_path(workload, family, size, seed, context)
    if out.exists():
        return json.loads(out.read_text())
    env, algo, extra = WORKLOADS[workload]
    model = model_options(family, size, context)
    run_dir = run_dir_of(workload, out, root)
    trl = str(Path(sys.executable).with_name("trl"))
    cmd = [trl, "run", "--env", env, "--algo", algo, "--model", model_kind(family), *options(model),
           "--seed", str(seed), "--root", str(run_dir.parent), "--name", run_dir.name, *extra,
           *(COMPACT if compact(workload) else [])]
    if not _call(cmd):
        return None
    report = json.loads((run_dir / "report.json").read_text())
    if report["iterations"] < json.loads((run_dir / "config.json").read_text())["iterations"] and not report["solved"]:
        raise RuntimeError(f"{run_dir.name} stopped early without solving")  # never a silently short run
    mode = json.loads((run_dir / "config.json").read_text())["eval_mode"]
    evals = {}
    last = "last" if compact(workload) else f"iter-{report['iterations']:03d}"  # the run's final checkpoint
    for key, ckpt in (("final", "best"), ("last", last)):
        if not (run_dir / "checkpoints" / ckpt).is_dir():
            continue
        path = run_dir / f"{key}-eval.json"
        if not _call([trl, "eval", str(run_dir / "checkpoints" / ckpt), "--episodes", "100", "--mode", mode,
                      "--seed", "123456789", "--report", str(path)]):
            return None
        evals[key] = json.loads(path.read_text())
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    result = {
        "workload": out.parent.name, "env": env, "algo": algo, "family": family, "size": size, "seed": seed,
        "context": context, "model_options": model, "parameters": report["parameters"],
        # no machine paths: not where the run went, nor where its best evaluation is recorded
        "command": " ".join(a for i, a in enumerate(cmd[1:]) if "--root" not in cmd[i:i + 2]),
        "env_steps": report["env_steps"], "wall_s": report["wall_s"], "solved": report["solved"],
        "stop_at": report["stop_at"], "best": {k: v for k, v in report["best"].items() if k != "recorded"},
        "final": {k: evals["final"][k] for k in ("episodes", "mean_return", "std_return", "min_return", "max_return")},
        # the last iteration's checkpoint on the same 100 games (absent from results made before it)
        "last": {k: evals["last"][k] for k in ("episodes", "mean_return", "std_return")} if "last" in evals else None,
        "eval_env_steps": sum(json.loads(p.read_text())["env_steps"] for p in (run_dir / "reports").glob("*.json")),
        "curve": [[r["env_steps"], r["wall_s"], r["eval/mean_return"]] for r in metrics if "eval/mean_return" in r],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".json.partial")  # the plan is read while runs finish: never half a result
    partial.write_text(json.dumps(result, indent=1) + "\n")
    partial.replace(out)
    if compact(workload):  # what stays in the repo: the result, the best and the last model (no optimizer)
        for ckpt, keep in (("best", out.stem), ("last", out.stem + "-last")):
            kept = out.parent / "checkpoints" / keep
            kept.mkdir(parents=True, exist_ok=True)
            for name in ("model.safetensors", "config.json"):
                shutil.copy2(run_dir / "checkpoints" / ckpt / name, kept / name)
        shutil.rmtree(run_dir)
    return result


def load_results() -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for path in sorted(RESULTS.glob("*/*.json")):
        r = json.loads(path.read_text())
        found.setdefault(r["workload"], []).append(r)
    return found


def summary(results: list[dict]) -> list[dict]:
    """Per (family, size, context): mean and std over seeds of the final score, env steps and
    wall time; ``x`` is the parameter count (the size sweep) or K (the context ablation)."""
    rows = []
    groups = sorted({(r["family"], r["size"], r.get("context")) for r in results},
                    key=lambda g: (g[0], list(SIZES[g[0]]).index(g[1]), g[2] or 0))
    for family, size, context in groups:
        mine = [r for r in results if (r["family"], r["size"], r.get("context")) == (family, size, context)]
        final = np.array([r["final"]["mean_return"] for r in mine])
        last = np.array([r["last"]["mean_return"] for r in mine if r.get("last")])  # absent from early results
        steps = np.array([r["env_steps"] for r in mine])
        wall = np.array([r["wall_s"] for r in mine])
        parameters = int(np.mean([r["parameters"] for r in mine]))
        k = context or mine[0]["model_options"].get("context") or (8 if model_kind(family) == "gpt" else 1)
        rows.append({"family": family, "size": size, "context": context, "k": k, "parameters": parameters,
                     "x": parameters if context is None else context, "seeds": len(mine),
                     "solved": sum(bool(r["solved"]) for r in mine), "stop_at": mine[0]["stop_at"],
                     "final": (final.mean(), final.std()),
                     "last": (last.mean(), last.std(), len(last)) if len(last) else None,
                     "env_steps": (steps.mean(), steps.std()),
                     "wall_s": (wall.mean(), wall.std()), "runs": mine})
    return rows


def save(fig, out: Path) -> None:
    import matplotlib.pyplot as plt

    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot(workload: str, rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.lines
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    from sweep_report import LAYOUT

    solving = rows[0]["stop_at"] is not None
    panels = [("final", "final score, 100 episodes" if solving else "score on 100 games")]
    if solving:
        panels += [("env_steps", "env steps to solve (budget if not)"),
                   ("wall_s", "wall seconds to solve (whole run if not)")]
    fig, axes = plt.subplots(1, len(panels), figsize=(max(6, 5 * len(panels)), 4 if solving else 4.5), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels, strict=True):
        for family, colour in (("gpt", "tab:blue"), ("mlp", "tab:orange"), ("gpt-feature", "tab:green"),
                               ("gpt-feature-k1", "tab:purple")):
            mine = [r for r in rows if r["family"] == family]
            if not mine:
                continue
            x = [r["x"] for r in mine]
            mean = np.array([r[key][0] for r in mine])
            std = np.array([r[key][1] for r in mine])
            ax.plot(x, mean, "o-", color=colour, label=f"{family} ({LAYOUT[family]})")
            ax.fill_between(x, mean - std, mean + std, color=colour, alpha=0.2)
            for r in mine:  # every seed
                values = [s["final"]["mean_return"] if key == "final" else s[key] for s in r["runs"]]
                ax.scatter([r["x"]] * len(values), values, color=colour, s=8, alpha=0.6)
                if key == "final" and not solving:  # the last checkpoint beside the best
                    lasts = [s["last"]["mean_return"] for s in r["runs"] if s.get("last")]
                    ax.scatter([r["x"]] * len(lasts), lasts, color=colour, marker="x", s=18, alpha=0.8)
        ablation = rows[0]["context"] is not None
        ax.set_xscale("log", base=2 if ablation else 10)
        ticks = sorted({r["x"] for r in rows}) if ablation else [t for t in (1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5)
                                                                  if min(r["x"] for r in rows) / 2 <= t
                                                                  <= max(r["x"] for r in rows) * 2]
        ax.set_xticks(ticks, [f"{t:g}" if ablation else f"{t / 1000:g}k" for t in ticks])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("K: steps of history (GPT context, MLP stack)" if ablation else "parameters")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()  # one legend, above the panels
    if not solving:
        handles.append(matplotlib.lines.Line2D([], [], color="grey", marker="x", linestyle=""))
        labels.append("each seed's last checkpoint")
    columns = len(labels) if len(panels) > 1 else 2  # one panel is too narrow for three
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.93 - 0.03 * (not solving)),
               ncol=columns, frameon=False)
    fig.suptitle(f"{workload}: mean ± std over seeds (dots: each seed)"
                 + ("" if solving else "\nof each run's best checkpoint"))
    fig.tight_layout(rect=(0, 0, 1, 0.88 - 0.06 * (math.ceil(len(labels) / columns) - 1) + 0.03 * (not solving)))
    save(fig, out)


def plot_paths(workload: str, rows: list[dict], plots: Path) -> dict[str, Path]:
    """A workload's plots by kind (sweep_report.ALT): every workload's score vs parameters (with
    env steps and wall seconds to solve where runs stop once solved), and the Atari stages'
    learning curves."""
    if rows[0]["stop_at"] is not None:
        return {"vs parameters": plots / f"sweep_{workload}.png"}
    pngs = {"score vs parameters": plots / f"sweep_{workload}.png"}
    if rows[0]["context"] is None:
        pngs["curves"] = plots / f"sweep_{workload}_curves.png"
    return pngs


def curves(workload: str, rows: list[dict], out: Path) -> None:
    """Every run's evaluations (16 games each) against env steps: one panel per family, one
    colour per size, a line per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sweep_report import LAYOUT

    families = list(dict.fromkeys(r["family"] for r in rows))
    fig, axes = plt.subplots(1, len(families), figsize=(max(6.5, 4.5 * len(families)), 3.8), sharey=True, squeeze=False)
    for ax, family in zip(axes[0], families, strict=True):
        mine = [r for r in rows if r["family"] == family]
        for i, r in enumerate(mine):
            colour = plt.get_cmap("viridis")(i / max(1, len(mine) - 1) * 0.85)
            for seed, run in enumerate(r["runs"]):
                steps, _, score = zip(*run["curve"], strict=True)
                ax.plot(np.array(steps) / 1e6, score, color=colour, lw=1, alpha=0.8,
                        label=f"{r['size']} ({r['parameters']:,})" if seed == 0 else None)
        ax.set_title(f"{family} ({LAYOUT[family]})", fontsize=10)
        ax.set_xlabel("env steps (millions)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, title="size (parameters)", title_fontsize=8)
    axes[0][0].set_ylabel("evaluation score (16 games)")
    fig.suptitle(f"{workload}: every run's evaluations, a line per seed")
    fig.tight_layout()
    save(fig, out)


DRAW = {"vs parameters": plot, "score vs parameters": plot, "curves": curves}  # plot_paths' kinds


def report(plots: Path) -> None:
    """Print every workload's table and verdict, draw its plot, and write both into the marked
    blocks of README.md and benchmarks/RESULTS.md (sweep_report.py)."""
    from sweep_report import block, preset_table, waiting, write_blocks

    repo = Path(__file__).resolve().parent.parent
    readme, results_md = {"presets": preset_table()}, {}
    for workload in [*PLAN, *PLAN_LATER]:  # planned, nothing finished yet: says so
        readme[workload] = results_md[workload] = waiting(workload)
    for workload, results in load_results().items():
        rows = summary(results)
        pngs = plot_paths(workload, rows, plots)
        for kind, png in pngs.items():
            DRAW[kind](workload, rows, png)
        print(f"\n### {workload}\n\n{block(workload, rows, None)}\n\nplots: {', '.join(map(str, pngs.values()))}")
        where = {kind: png.resolve() for kind, png in pngs.items()}
        inside = {kind: str(png.relative_to(repo)) for kind, png in where.items() if png.is_relative_to(repo)}
        readme[workload] = block(workload, rows, inside)
        results_md[workload] = block(workload, rows, {kind: "../" + png for kind, png in inside.items()})
    for path, blocks in ((repo / "README.md", readme), (repo / "benchmarks" / "RESULTS.md", results_md)):
        written = write_blocks(path, blocks)
        print(f"{path.name}: {', '.join(written) or 'no marked blocks'}")


def sizes() -> None:
    from transformer_rl.envs import resolve
    from transformer_rl.models import ModelArgs, build_model

    print("| family | size | options | CartPole-v1 | Breakout-ram |")
    print("| --- | --- | --- | --- | --- |")
    for family, table in SIZES.items():
        for size, model in table.items():
            args = ModelArgs(model=model_kind(family), **model_options(family, size, None))
            counts = [build_model(args.config(resolve(env))).num_params() for env in ("CartPole-v1", "Breakout-ram")]
            print(f"| {family} | {size} | `{' '.join(options({**model, **DEPTH}))}` | {counts[0]:,} | {counts[1]:,} |")


def queue(a: argparse.Namespace) -> list[tuple]:
    if a.context:
        return [(w, f, ABLATION[f], seed, k) for w in a.workload or [] for k in map(int, a.context.split(","))
                for f in (a.families or "gpt,mlp").split(",") for seed in map(int, a.seeds.split(","))]
    def planned(workload: str) -> dict[str, tuple[str, ...]]:
        if a.families is None and a.sizes is None and workload in PLAN:
            return PLAN[workload]
        if a.families is None and a.sizes is None and workload in PLAN_LATER:
            return PLAN_LATER[workload]()  # decided from the committed 2M results
        return {f: tuple(s for s in SIZES[f] if a.sizes is None or s in a.sizes.split(","))
                for f in (a.families or "gpt,mlp").split(",")}

    return [(w, f, s, seed, None) for w in a.workload or [] for f, sizes in planned(w).items() for s in sizes
            for seed in map(int, a.seeds.split(","))]


def iterations_of(workload: str) -> int:
    """A PPO workload's iterations: its --iterations, else the Atari preset's."""
    from transformer_rl.config import PRESETS, Algo

    extra = WORKLOADS[workload][2]
    return int(extra[extra.index("--iterations") + 1]) if "--iterations" in extra else \
        PRESETS[Algo.ppo, "atari"]["iterations"]


def progress(run_dir: Path) -> tuple[float, float] | None:
    """An in-flight run's (fraction of its iterations done, wall seconds so far); None if none."""
    if not (run_dir / "state.json").is_file():
        return None
    state = json.loads((run_dir / "state.json").read_text())
    return state["iteration"] / json.loads((run_dir / "config.json").read_text())["iterations"], state["wall_s"]


def wall_at_2m(family: str, size: str | None) -> float | None:
    """The mean wall seconds of the family's Breakout 2M runs (of ``size``, else of every size):
    the finished ones, else the in-flight ones' pace."""
    two_m = RESULTS / "breakout-ppo-2m"
    walls = [r["wall_s"] for r in map(json.loads, (path.read_text() for path in two_m.glob("*.json")))
             if r["family"] == family and size in (None, r["size"])]
    if not walls:
        for sz in (size,) if size else SIZES[family]:
            for run_dir in (two_m / "runs").glob(f"breakout-ppo-2m-{family}-{sz}-s*"):
                if (done := progress(run_dir)) and done[0]:
                    walls.append(done[1] / done[0])
    return float(np.mean(walls)) if walls else None


def estimate_from_2m(workload: str, family: str, size: str | None) -> float | None:
    """One run's wall seconds for a later stage, guessed from the family's Breakout 2M runs: times
    what the stage's finished runs took over their own 2M configurations' (the 10M runs budget
    their evaluations, so they cost less than their iterations say), else scaled by iterations
    (Seaquest's emulator costs about what Breakout's does)."""
    if (mine := wall_at_2m(family, size)) is None:
        return None
    finished = [json.loads(path.read_text()) for path in (RESULTS / workload).glob("*.json")]
    ratios = [r["wall_s"] / two_m for r in finished if (two_m := wall_at_2m(r["family"], r["size"]))]
    return mine * (float(np.mean(ratios)) if ratios else iterations_of(workload) / iterations_of("breakout-ppo-2m"))


def status(jobs: list[tuple], root: Path, planned: bool = False) -> None:
    """Per workload: runs done, in flight (how far), queued, and the hours spent and left at the
    speed each family's finished runs of the workload measured (one run's wall time; --jobs N
    shares the machine). A later stage's runs not measured yet are guessed from the family's
    2M runs; with ``planned``, so are the SEEDS runs of each family whose 2M size is undecided."""
    total_spent = total_left = 0.0
    some_unmeasured = False
    for workload in dict.fromkeys(job[0] for job in jobs):
        mine = [job for job in jobs if job[0] == workload]
        done, flying = {}, {}  # job -> its result; job -> (run name, fraction done, wall s)
        for job in mine:
            out = result_path(*job[:4], job[4])
            run_dir = run_dir_of(workload, out, root)
            if out.exists():
                done[job] = json.loads(out.read_text())
            elif (done_so_far := progress(run_dir)) is not None:
                flying[job] = (run_dir.name, *done_so_far)
        spent = sum(r["wall_s"] for r in done.values()) + sum(wall for *_, wall in flying.values())
        left = guessed = 0.0
        unmeasured = {}
        results = result_path(*mine[0][:4], mine[0][4]).parent
        finished = [json.loads(path.read_text()) for path in results.glob("*.json")]
        todo = {(family, size): sum(1 - flying[job][1] if job in flying else 1 for job in mine
                                    if job[1:3] == (family, size) and job not in done)
                for family, size in dict.fromkeys(j[1:3] for j in mine)}
        if planned and workload in PLAN_LATER:  # families whose 2M size is not decided yet
            todo.update({(family, None): SEEDS for family, (size, why) in decide_2m().items()
                         if size is None and not why.startswith("left out")})
        for (family, size), n in todo.items():
            walls = [r["wall_s"] for r in finished if r["family"] == family] or [
                wall / frac for job, (_, frac, wall) in flying.items() if job[1] == family and frac]
            if walls:
                left += np.mean(walls) * n
            elif n and (guess := estimate_from_2m(workload, family, size)) is not None:
                guessed += guess * n
            elif n:
                unmeasured[family] = n
        queued = len(mine) - len(done) - len(flying)
        more = f" + {guessed / 3600:.1f} h guessed from the 2M runs" if guessed else ""
        more += "".join(f" + {n:g} {family} runs not measured yet" for family, n in unmeasured.items())
        print(f"{workload}: {len(done)} done, {len(flying)} in flight, {queued} queued; "
              f"{spent / 3600:.1f} h spent, {left / 3600:.1f} h left at each family's measured speed{more}")
        for name, frac, _ in flying.values():
            print(f"  in flight: {name} {100 * frac:.0f}%")
        total_spent, total_left = total_spent + spent, total_left + left + guessed
        some_unmeasured |= bool(unmeasured)
    if len({job[0] for job in jobs}) > 1:
        print(f"all: {total_spent / 3600:.1f} machine-hours spent, {total_left / 3600:.1f} left"
              + (" (and the runs not measured yet)" if some_unmeasured else ""))


def next_job(pending: list[tuple], running: list[tuple], root: Path) -> tuple | None:
    """The job for a free slot: one begun before (finished, or in flight from a past session, so
    that few runs stay half-done), else the first pending job of the workload with the fewest runs
    going (ties: the order the workloads were given)."""
    begun = [job for job in pending if (out := result_path(*job)).exists()
             or progress(run_dir_of(job[0], out, root)) is not None]
    if begun:
        return begun[0]
    if not pending:
        return None
    going = Counter(job[0] for job in running)
    workload = min(dict.fromkeys(job[0] for job in pending), key=lambda w: going[w])
    return next(job for job in pending if job[0] == workload)


def stop_at(deadline: float) -> None:
    time.sleep(max(0.0, deadline - time.time()))
    stop_now()


def stop_on_signal(signum: int, _frame) -> None:
    STOPPED_BY[0] = signal.Signals(signum).name
    stop_now()


def stop_now() -> None:
    """Stop every run cleanly: SIGTERM, which `trl run` unwinds like Ctrl-C, leaving the run at
    its last committed iteration."""
    with LOCK:
        STOP.set()
        for proc in RUNNING:
            proc.send_signal(signal.SIGTERM)


def main() -> None:
    global RESULTS
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["run", "report", "sizes", "status"])
    p.add_argument("--workload", choices=list(WORKLOADS), action="append")
    p.add_argument("--families", help="comma-separated (default: the workload's PLAN, else gpt,mlp)")
    p.add_argument("--sizes", help="comma-separated size labels (default: all of each family)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--context", help="the context ablation: comma-separated K (GPT --context, MLP --stack)")
    p.add_argument("--jobs", type=int, default=1, help="runs at once, one process each")
    p.add_argument("--deadline", type=float, help="minutes from now: then stop every run cleanly (resumable)")
    p.add_argument("--root", type=Path, default=Path("runs/sweep"), help="where non-compact (DQN) runs go")
    p.add_argument("--results", type=Path, default=RESULTS, help="results, compact in-flight runs, best models")
    p.add_argument("--plots", type=Path, default=Path("docs"))
    a = p.parse_args()
    RESULTS = a.results
    if a.command == "sizes":
        return sizes()
    if a.command == "report":
        return report(a.plots)
    if a.command == "status":
        status(queue(a), a.root, planned=a.families is None and a.sizes is None)
        for workload in a.workload or []:
            if workload in PLAN_LATER and a.families is None and a.sizes is None:
                print(f"{workload}: " + "; ".join(f"{family} {size or '-'} ({why})"
                                                  for family, (size, why) in decide_2m().items()))
        return
    if a.deadline is not None:
        threading.Thread(target=stop_at, args=(time.time() + 60 * a.deadline,), daemon=True).start()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop_on_signal)
    started: set[tuple] = set()
    running: dict[Future, tuple] = {}
    with ThreadPoolExecutor(a.jobs) as pool:
        while True:
            # the plan read again whenever a run finishes: a finished 2M sweep decides the 10M runs
            while len(running) < a.jobs and not STOP.is_set():
                job = next_job([j for j in queue(a) if j not in started], list(running.values()), a.root)
                if job is None:
                    break
                started.add(job)
                running[pool.submit(run_one, *job, a.root)] = job
            if not running:
                break
            for future in wait(running, return_when=FIRST_COMPLETED).done:
                job, r = running.pop(future), future.result()
                if r is None:
                    print(f"{job}: stopped by {STOPPED_BY[0]}; the same command resumes it", flush=True)
                    continue
                print(f"{job}: {r['parameters']:,} params, solved {r['solved']}, env steps {r['env_steps']:,}, "
                      f"final {r['final']['mean_return']:.1f}", flush=True)


if __name__ == "__main__":
    main()
