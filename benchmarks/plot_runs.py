"""Plot eval mean return vs env steps for several `trl run` directories on one figure.

Usage: .venv/bin/python benchmarks/plot_runs.py OUT.png RUN_DIR [RUN_DIR ...]
"""

import sys
from pathlib import Path

from transformer_rl.evaluate.plots import plot_runs

if __name__ == "__main__":
    plot_runs(Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]])
