"""Plot eval mean return vs env steps for several `trl run` directories on one figure.

Usage: .venv/bin/python benchmarks/plot_runs.py OUT.png RUN_DIR [RUN_DIR ...]
Runs whose name contains "-gpt-" or "-mlp-" get one colour per model.
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot(out: Path, runs: list[Path], title: str = "") -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    colours = {"gpt": "tab:blue", "mlp": "tab:orange"}
    seen = set()
    threshold = None
    for run in runs:
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
        rows = [r for r in rows if r.get("eval/mean_return") is not None]
        model = "gpt" if "-gpt-" in run.name else "mlp" if "-mlp-" in run.name else run.name
        label = model if model not in seen else None
        seen.add(model)
        ax.plot([r["env_steps"] for r in rows], [r["eval/mean_return"] for r in rows], marker=".",
                color=colours.get(model), label=label, alpha=0.8)
        threshold = json.loads((run / "report.json").read_text()).get("stop_at") or threshold
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


if __name__ == "__main__":
    plot(Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]])
