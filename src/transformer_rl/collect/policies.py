"""Behaviour policies for collection.

A policy sees one EnvPool batch at a time: observations, the env ids they came from, and which
of them start a new episode (so a sequence model can reset its per-env context). It returns
actions and, for PPO, the log-probability and value of each action (else None).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

Act = tuple[np.ndarray, np.ndarray | None, np.ndarray | None]


class Policy(Protocol):
    def act(self, obs: np.ndarray, env_ids: np.ndarray, first: np.ndarray) -> Act:
        """obs (B, D), env_ids (B,), first (B,) bool -> actions (B,) int32, logp, value."""
        ...

    def describe(self) -> dict[str, Any]:
        """What produced the data, for the dataset manifest."""
        ...


class RandomPolicy:
    """Uniform over the discrete actions."""

    def __init__(self, num_actions: int, seed: int = 0):
        self.num_actions, self.seed = num_actions, seed
        self.rng = np.random.default_rng(seed)

    def act(self, obs: np.ndarray, env_ids: np.ndarray, first: np.ndarray) -> Act:
        return self.rng.integers(0, self.num_actions, len(env_ids), dtype=np.int32), None, None

    def describe(self) -> dict[str, Any]:
        return {"policy": "random", "seed": self.seed, "checkpoint": None, "iteration": None}
