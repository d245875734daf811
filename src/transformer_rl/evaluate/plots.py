"""Learning curves: eval mean return vs env steps, for one run or several on one figure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

COLOURS = {"gpt": "tab:blue", "mlp": "tab:orange"}


def eval_rows(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("eval/mean_return") is not None]


def plot_runs(out: Path, runs: list[Path], title: str = "", threshold: float | None = None) -> Path | None:
    """One line per run, coloured by model (from its report.json or name); a single run also
    shows the eval's std as a band. Returns ``out``, or None when no run has an evaluation yet."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = [(Path(run), rows) for run in runs if (rows := eval_rows(run))]
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    seen = set()
    for run, rows in curves:
        model = _model_of(run)
        x = [r["env_steps"] for r in rows]
        y = np.array([r["eval/mean_return"] for r in rows])
        ax.plot(x, y, marker="o" if len(curves) == 1 else ".", color=COLOURS.get(model), alpha=0.8,
                label=None if model in seen else model)
        seen.add(model)
        if len(curves) == 1:
            s = np.array([r["eval/std_return"] for r in rows])
            ax.fill_between(x, y - s, y + s, alpha=0.2, color=COLOURS.get(model))
    if threshold is not None:
        ax.axhline(threshold, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("env steps")
    ax.set_ylabel("eval mean return")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return Path(out)


def _model_of(run: Path) -> str:
    config = run / "config.json"
    if config.exists():
        return json.loads(config.read_text()).get("model", {}).get("model", run.name)
    return "gpt" if "-gpt-" in run.name else "mlp" if "-mlp-" in run.name else run.name
