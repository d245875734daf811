"""Datasets: Parquet shards + manifest. Read with `load`, sample with `sample_windows`."""

from transformer_rl.datasets.format import read_manifest
from transformer_rl.datasets.reader import (
    Transitions,
    Windows,
    load,
    sample_windows,
    window_indices,
)

__all__ = ["Transitions", "Windows", "load", "read_manifest", "sample_windows", "window_indices"]
