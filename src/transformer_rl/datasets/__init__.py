"""Datasets: Parquet shards + manifest. `load` reads them into `Transitions`;
`build_sequences` lays episodes out as model inputs, and `Sequences.windows` cuts K-step windows."""

from transformer_rl.datasets.format import read_manifest
from transformer_rl.datasets.reader import Transitions, load
from transformer_rl.datasets.sequences import Sequences, build_sequences

__all__ = ["Sequences", "Transitions", "build_sequences", "load", "read_manifest"]
