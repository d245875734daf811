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
CAMPAIGN_LOAD = "two runs at a time on a 2-core CPU machine, beside other work, over several sessions"
LOAD = {
    "cartpole-dqn": "two runs at a time on a 2-core CPU machine",
    "cartpole-ppo": "two runs at a time on a 2-core CPU machine",
    "cartpole-dqn-context": "two runs at a time on a 2-core CPU machine, in another session than the size sweep: "
                            "its K = 8 GPT and K = 1 MLP rows rerun size-sweep configurations, so compare their "
                            "wall seconds within this table only",
    "breakout-ppo-2m": "two runs at a time on a 2-core CPU machine; seed 0 with the machine otherwise idle, seeds "
                       "1-2 beside other work (tests, other sessions' commands), so wall seconds are upper bounds",
    "breakout-ppo-10m": CAMPAIGN_LOAD,
    "seaquest-ppo-2m": CAMPAIGN_LOAD,
}

# published figures a workload's table is read beside
PUBLISHED = {
    "breakout-ppo-10m": (
        "DQN from Breakout's RAM (Sygnowski and Michalewski, 2016): 99.6 with 2 x 128 hidden units, 178 with "
        "4 x 128, in 5M agent steps, without sticky actions, the best of many test epochs. Here: sticky "
        "actions (ALE v5), full 5-life games, sampled actions, one 100-game evaluation of each run's best "
        "checkpoint on fresh seeds"),
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
    scores = ["final score (100 ep)"] if solving else ["best checkpoint (100 ep)", "last checkpoint (100 ep)"]
    head = ["family", "layout", "size", "K", "parameters", "seeds"] + (["solved"] if solving else []) + scores + [
        "env steps to solve" if solving else "env steps", "wall s"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        cells = [r["family"], LAYOUT[r["family"]], r["size"], str(r["k"]), f"{r['parameters']:,}", str(r["seeds"])]
        cells += [f"{r['solved']}/{r['seeds']}"] if solving else []
        cells += [fmt(r["final"], 1)] + ([] if solving else [last_cell(r)]) + [fmt(r["env_steps"]), fmt(r["wall_s"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def last_cell(r: dict) -> str:
    """The last iteration's checkpoint on the same 100 games (results from before it was scored: -)."""
    if r["last"] is None:
        return "-"
    mean, std, n = r["last"]
    return fmt((mean, std), 1) + (f" ({n} of {r['seeds']} seeds)" if n < r["seeds"] else "")


def welch(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """Welch's t-test of mean(a) - mean(b): (two-sided p-value, the 95% interval's low and high)."""
    na, nb = len(a), len(b)
    ma, mb = sum(a) / na, sum(b) / nb
    va = sum((x - ma) ** 2 for x in a) / (na - 1)
    vb = sum((x - mb) ** 2 for x in b) / (nb - 1)
    se2 = va / na + vb / nb
    if se2 == 0:
        return (1.0 if ma == mb else 0.0), ma - mb, ma - mb
    df = se2**2 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))
    half = t_quantile(0.05, df) * math.sqrt(se2)
    return two_sided_p((ma - mb) / math.sqrt(se2), df), ma - mb - half, ma - mb + half


def two_sided_p(t: float, df: float) -> float:
    """P(|T| > |t|) for Student's t with ``df`` degrees of freedom."""
    return _betainc(df / 2, 0.5, df / (df + t * t))


def t_quantile(p: float, df: float) -> float:
    """The t with P(|T| > t) = ``p`` (bisection: two_sided_p falls as t grows)."""
    lo, hi = 0.0, 1e3
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if two_sided_p(mid, df) > p else (lo, mid)
    return (lo + hi) / 2


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


def best_of(rows: list[dict], family: str, key: str = "final", better=max, seeds: int = 1) -> dict | None:
    """The family's row with the best mean ``key`` among those with at least ``seeds`` seeds."""
    mine = [r for r in rows if r["family"] == family and r["seeds"] >= seeds]
    return better(mine, key=lambda r: r[key][0]) if mine else None


def verdict(rows: list[dict]) -> str:
    """The claim as stated, per transformer layout: does its best size (N parameters) beat every
    dense net of at least N parameters? By env steps to solve where the workload has a threshold
    (fewer is better), else by the best checkpoint's score; Welch's test over seeds, with the 95% interval
    of each difference (transformer minus dense net). Then the same best size against the dense
    net's best size, whatever its size."""
    solving = rows[0]["stop_at"] is not None
    key, metric, better = (("env_steps", "env steps to solve", min) if solving
                           else ("final", "the best checkpoint's score", max))
    digits = 0 if solving else 1

    def values(r: dict) -> list[float]:
        return [float(s["env_steps"] if solving else s["final"]["mean_return"]) for s in r["runs"]]

    def named(r: dict) -> str:
        return f"{r['family']} {r['size']} ({r['parameters']:,} parameters, {fmt(r[key], digits)})"

    def against(mine: dict, dense: dict) -> tuple[str, float, bool]:
        """The comparison's words, its p-value, and whether the transformer is ahead."""
        p, low, high = welch(values(mine), values(dense))
        ahead = (mine[key][0] < dense[key][0]) if solving else (mine[key][0] > dense[key][0])
        words = (f"mlp {dense['size']} ({dense['parameters']:,}, {fmt(dense[key], digits)}): difference "
                 f"{mine[key][0] - dense[key][0]:+,.{digits}f}, 95% CI [{low:+,.{digits}f}, {high:+,.{digits}f}], "
                 f"p = {p:.2f}")
        return words, p, ahead

    def best(family: str) -> dict | None:
        return best_of(rows, family, key, better, seeds=2)

    dense_rows = [r for r in rows if r["family"] == "mlp" and r["seeds"] >= 2]
    lines = []
    for family in TRANSFORMERS:
        mine = best(family)
        if mine is None or not dense_rows:
            continue
        larger = [r for r in dense_rows if r["parameters"] >= mine["parameters"]]
        seeds = min(r["seeds"] for r in [mine, *larger])
        compared = [against(mine, dense) for dense in larger]
        if not larger:
            answer = f"**not tested**: no dense net of at least {mine['parameters']:,} parameters has 2 seeds"
        elif all(p < 0.05 and ahead for _, p, ahead in compared):
            answer = "**yes**: it beats every one"
        elif any(p < 0.05 and not ahead for _, p, ahead in compared):
            answer = "**no**: a dense net at least as large is better"
        else:
            answer = f"**not distinguishable at {seeds} seeds**"
        lines.append(f"- {LAYOUT[family]}: the best transformer is {named(mine)}, by {metric}. Does it beat every "
                     f"dense net of at least its size? {answer}.")
        lines += [f"  - against {words}" for words, _, _ in compared]
        top = best("mlp")
        if top in larger:
            lines.append(f"  - the dense net's best size is mlp {top['size']}, above."
                         + (wall_line(mine, top) if solving else ""))
        else:
            words, p, ahead = against(mine, top)
            state = ("not distinguishable" if p >= 0.05 else "the transformer is better" if ahead
                     else "the dense net is better")
            lines.append(f"  - against the dense net's best size, {words}: {state}."
                         + (wall_line(mine, top) if solving else ""))
    return "\n".join(lines) if lines else "- no verdict yet: a transformer or the dense net has fewer than 2 seeds."


def wall_line(mine: dict, dense: dict) -> str:
    """The same two configurations per wall second to solve (under the load stated above)."""
    p, _, _ = welch([float(s["wall_s"]) for s in mine["runs"]], [float(s["wall_s"]) for s in dense["runs"]])
    faster = "the transformer" if mine["wall_s"][0] < dense["wall_s"][0] else "the dense net"
    return (f" Per wall second to solve: {fmt(mine['wall_s'])} vs {fmt(dense['wall_s'])} s, p = {p:.2f}"
            + (f" ({faster} is faster)." if p < 0.05 else " (not distinguishable)."))


def waiting(workload: str) -> str:
    """A planned workload's block before its first run has finished."""
    return (f"No {workload} run has finished yet: benchmarks/RESULTS.md (\"The campaign's ledger\") says which are "
            "in flight and queued.")


def beside_published(workload: str, rows: list[dict]) -> str:
    """Each family's best configuration here, beside the published figures."""
    ours = []
    for family in dict.fromkeys(r["family"] for r in rows):
        r = best_of(rows, family)
        if r["seeds"] == 1:  # one score: no spread to give
            last = "" if r["last"] is None else f"; its last checkpoint {r['last'][0]:.1f}"
            ours.append(f"{family} {r['size']} {r['final'][0]:.1f} from 1 seed so far{last}")
            continue
        top = max(s["final"]["mean_return"] for s in r["runs"])
        last = "" if r["last"] is None else f"; its last checkpoints {last_cell(r)}"
        ours.append(f"{family} {r['size']} {fmt(r['final'], 1)} over {r['seeds']} seeds "
                    f"(its best seed {top:.1f}{last})")
    return f"Beside the published figures: {PUBLISHED[workload]}: " + "; ".join(ours) + "."


ALT = {"vs parameters": "score, env steps and wall seconds vs parameters, every seed",
       "score vs parameters": "score on 100 games vs parameters, every seed's best and last checkpoint",
       "curves": "every run's evaluations against env steps"}


def block(workload: str, rows: list[dict], plots: dict[str, str] | None) -> str:
    """The generated text for one workload."""
    parts = [table(rows), "", f"Load: {load_of(workload, rows)}. Mean ± std over seeds."]
    if workload in PUBLISHED:
        parts += ["", beside_published(workload, rows)]
    if rows[0]["context"] is None:
        unit = "env steps to solve: below 0, the transformer" if rows[0]["stop_at"] is not None else \
            "the best checkpoint's score on 100 games: above 0, the transformer"
        parts += ["", f"Verdict, computed from the seeds above (differences: transformer minus dense net, in {unit} "
                  "is better; Welch's t-test over seeds):", "", verdict(rows)]
    for kind, path in (plots or {}).items():  # kind: a key of ALT
        parts += ["", f"![{workload}: {ALT[kind]}]({path})"]
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
