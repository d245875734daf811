"""What `experiment.py report` writes: per workload a table of the finished runs, the load they
ran under, and a verdict computed from the seeds (Welch's t-test), between markers in README.md
and benchmarks/RESULTS.md:

    <!-- report: cartpole-dqn -->
    ...generated; edits here are overwritten...
    <!-- /report: cartpole-dqn -->

A workload's block appears where its markers are, once per file; files without them are left
alone. Nothing in the blocks is typed by hand, so the tables cannot drift from benchmarks/sweep/.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

LAYOUT = {"gpt": "token per step", "gpt-feature": "token per feature", "gpt-feature-k1": "token per feature",
          "mlp": "dense"}
TRANSFORMERS = ("gpt", "gpt-feature", "gpt-feature-k1")

# the load each workload's runs ran under, which wall seconds depend on
LOAD = {
    "cartpole-dqn": "two runs at a time on a 2-core CPU machine",
    "cartpole-ppo": "two runs at a time on a 2-core CPU machine",
    "cartpole-dqn-context": "two runs at a time on a 2-core CPU machine, in another session than the size sweep: "
                            "its K = 8 GPT and K = 1 MLP rows rerun size-sweep configurations, so compare their "
                            "wall seconds within this table only",
    "breakout-ppo-2m": "two runs at a time on a 2-core CPU machine; seed 0 with the machine otherwise idle, seeds "
                       "1-2 beside other work (tests, other sessions' commands), so wall seconds are upper bounds",
}

# families of a workload that ran under another load than its first runs
BESIDE = "one at a time, beside one or two Breakout runs, the other CartPole sweep and other work"
LATER_LOAD = {("cartpole-dqn", "gpt-feature"): BESIDE, ("cartpole-ppo", "gpt-feature"): BESIDE}


def load_of(workload: str, rows: list[dict]) -> str:
    notes = [f"the {family} rows: {LATER_LOAD[workload, family]}" for family in dict.fromkeys(r["family"] for r in rows)
             if (workload, family) in LATER_LOAD]
    return LOAD.get(workload, "not recorded") + (f" ({'; '.join(notes)})" if notes else "")


def fmt(mean_std: tuple[float, float], digits: int = 0) -> str:
    return f"{mean_std[0]:,.{digits}f} ± {mean_std[1]:,.{digits}f}"


def table(rows: list[dict]) -> str:
    """Markdown: one row per (family, size, K) with its seeds' mean ± std."""
    solving = rows[0]["stop_at"] is not None
    head = ["family", "layout", "size", "K", "parameters", "seeds"] + (["solved"] if solving else []) + [
        "final score (100 ep)", "env steps to solve" if solving else "env steps", "wall s"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        cells = [r["family"], LAYOUT[r["family"]], r["size"], str(r["k"]), f"{r['parameters']:,}", str(r["seeds"])]
        cells += [f"{r['solved']}/{r['seeds']}"] if solving else []
        cells += [fmt(r["final"], 1), fmt(r["env_steps"]), fmt(r["wall_s"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def welch(a: list[float], b: list[float]) -> float:
    """Two-sided p-value of Welch's t-test that the means of ``a`` and ``b`` differ."""
    na, nb = len(a), len(b)
    ma, mb = sum(a) / na, sum(b) / nb
    va = sum((x - ma) ** 2 for x in a) / (na - 1)
    vb = sum((x - mb) ** 2 for x in b) / (nb - 1)
    se2 = va / na + vb / nb
    if se2 == 0:
        return 1.0 if ma == mb else 0.0
    t = (ma - mb) / math.sqrt(se2)
    df = se2**2 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))
    return _betainc(df / 2, 0.5, df / (df + t * t))  # P(|T| > |t|) for Student's t with df


def _betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b) (Lentz's continued fraction)."""
    if x <= 0 or x >= 1:
        return max(0.0, min(1.0, x))
    if x > (a + 1) / (a + b + 2):
        return 1 - _betainc(b, a, 1 - x)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)) / a
    f, c, d = 1.0, 1.0, 0.0
    for i in range(400):
        m = i // 2
        if i == 0:
            step = 1.0
        elif i % 2 == 0:
            step = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        else:
            step = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1 / (1 + step * d if abs(1 + step * d) > 1e-30 else 1e-30)
        c = 1 + step / c if abs(1 + step / c) > 1e-30 else 1e-30
        f *= c * d
        if abs(c * d - 1) < 1e-12:
            break
    return front * (f - 1)


def verdict(rows: list[dict]) -> str:
    """Each transformer layout's best size against the dense net's best size, seed by seed:
    env steps to solve where the workload has a threshold (fewer is better), else the final
    score. yes: better and no larger; no: the dense net is better; else not distinguishable."""
    solving = rows[0]["stop_at"] is not None
    metric, better = ("env steps to solve", min) if solving else ("final score", max)

    def values(r: dict) -> list[float]:
        return [float(s["env_steps"] if solving else s["final"]["mean_return"]) for s in r["runs"]]

    def best(family: str) -> dict | None:
        mine = [r for r in rows if r["family"] == family and r["seeds"] >= 2]
        return better(mine, key=lambda r: r["env_steps"][0] if solving else r["final"][0]) if mine else None

    dense = best("mlp")
    lines = []
    for family in TRANSFORMERS:
        mine = best(family)
        if mine is None or dense is None:
            continue
        p = welch(values(mine), values(dense))
        ahead = (mine["env_steps"][0] < dense["env_steps"][0]) if solving else (mine["final"][0] > dense["final"][0])
        seeds = min(mine["seeds"], dense["seeds"])
        if p >= 0.05:
            answer = f"**not distinguishable at {seeds} seeds**"
        elif not ahead:
            answer = "**no**: the dense net is better"
        elif mine["parameters"] <= dense["parameters"]:
            answer = "**yes**: better, and no larger"
        else:
            answer = "**better, but not smaller**: the transformer is the larger network"
        lines.append(
            f"- {LAYOUT[family]} ({family} {mine['size']}, {mine['parameters']:,} parameters) against the dense "
            f"net (mlp {dense['size']}, {dense['parameters']:,}), each at its best size by {metric}: "
            f"{fmt(mine['env_steps'] if solving else mine['final'], 0 if solving else 1)} vs "
            f"{fmt(dense['env_steps'] if solving else dense['final'], 0 if solving else 1)}, Welch p = {p:.2f}: "
            f"{answer}." + (wall_line(mine, dense) if solving else ""))
    return "\n".join(lines) if lines else "- no verdict yet: a transformer or the dense net has fewer than 2 seeds."


def wall_line(mine: dict, dense: dict) -> str:
    """The same two configurations per wall second to solve (under the load stated above)."""
    p = welch([float(s["wall_s"]) for s in mine["runs"]], [float(s["wall_s"]) for s in dense["runs"]])
    faster = "the transformer" if mine["wall_s"][0] < dense["wall_s"][0] else "the dense net"
    return (f" Per wall second to solve: {fmt(mine['wall_s'])} vs {fmt(dense['wall_s'])} s, p = {p:.2f}"
            + (f" ({faster} is faster)." if p < 0.05 else " (not distinguishable)."))


def block(workload: str, rows: list[dict], plot: str | None) -> str:
    """The generated text for one workload."""
    parts = [table(rows), "", f"Load: {load_of(workload, rows)}. Mean ± std over seeds."]
    if rows[0]["context"] is None:
        parts += ["", "Verdict (computed from the seeds above):", "", verdict(rows)]
    if plot:
        parts += ["", f"![{workload}: score, env steps and wall seconds vs parameters, every seed]({plot})"]
    return "\n".join(parts)


def preset_table() -> str:
    """config.PRESETS as the README's table: each preset's budget, envs and evaluation (the
    defaults where it keeps them) and every other setting it changes, as options."""
    from dataclasses import fields

    from transformer_rl.config import PRESETS, RunConfig
    from transformer_rl.settings import option_name

    defaults = {f.name: f.default for f in fields(RunConfig)}
    shown = ("iterations", "steps_per_iteration", "num_envs", "eval_every", "eval_episodes", "eval_mode")
    names = {"classic": "CartPole & co", "atari": "Atari RAM"}
    lines = ["| preset | iterations x env steps | envs | evaluate every | eval episodes | other settings |",
             "| --- | --- | --- | --- | --- | --- |"]
    for (algo, family), preset in PRESETS.items():
        v = {**{k: defaults[k] for k in shown}, **preset}
        budget = v["iterations"] * v["steps_per_iteration"]
        other = ", ".join(f"`{option_name(k)}`" if v is True else f"`{option_name(k)} {v:g}`"
                          if isinstance(v, float) else f"`{option_name(k)} {v}`"
                          for k, v in preset.items() if k not in shown)
        lines.append(f"| {str(algo).upper()}, {names[family]} | {v['iterations']} x {v['steps_per_iteration']:,} "
                     f"({budget:,}) | {v['num_envs']} | {v['eval_every']} iteration{'s' * (v['eval_every'] > 1)} | "
                     f"{v['eval_episodes']}, {v['eval_mode']} | {other or '-'} |")
    return "\n".join(lines)


def write_blocks(path: Path, blocks: dict[str, str]) -> list[str]:
    """Replace each workload's marked block in ``path``; returns the workloads it held."""
    text = path.read_text()
    done = []
    for workload, body in blocks.items():
        pattern = re.compile(rf"(<!-- report: {re.escape(workload)} -->\n).*?(<!-- /report: {re.escape(workload)} -->)",
                             re.S)
        if pattern.search(text):
            text = pattern.sub(lambda m, body=body: m.group(1) + body + "\n" + m.group(2), text)
            done.append(workload)
    path.write_text(text)
    return done
