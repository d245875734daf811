"""Load a dataset into contiguous arrays once (`Transitions`); `sequences.py` windows them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from transformer_rl.datasets.format import read_manifest
from transformer_rl.datasets.shards import read_shard


@dataclass
class Transitions:
    """All rows of the chosen shards, in dataset order. N rows, E episodes, D obs dims."""

    obs: np.ndarray  # (N, D) float32 or uint8
    action: np.ndarray  # (N,) int64
    reward: np.ndarray  # (N,) float32
    terminated: np.ndarray  # (N,) bool, True only on the last row of a terminated episode
    truncated: np.ndarray  # (N,) bool
    episode_id: np.ndarray  # (N,) int64
    env_index: np.ndarray  # (N,) int32
    step: np.ndarray  # (N,) int32
    logp: np.ndarray  # (N,) float32, NaN where not recorded
    value: np.ndarray  # (N,) float32, NaN where not recorded
    final_obs: np.ndarray  # (E, D) observation after each episode's last step
    episode_rows: np.ndarray  # (E + 1,) episode e spans rows episode_rows[e]:episode_rows[e+1]
    manifest: dict[str, Any] = field(default_factory=dict)  # empty for rollouts not read from disk
    # on-policy rollouts only (see collect/trace.py):
    learn: np.ndarray | None = None  # (N,) bool, rows acted on now; the others are context
    life_lost: np.ndarray | None = None  # (N,) bool, Atari: the step lost a life

    def __len__(self) -> int:
        return len(self.action)

    @property
    def num_episodes(self) -> int:
        return len(self.final_obs)

    @property
    def done(self) -> np.ndarray:
        return self.terminated | self.truncated

    def next_obs(self) -> np.ndarray:
        """(N, D): the observation after each row's action (final_obs on last rows)."""
        nxt = np.empty_like(self.obs)
        nxt[:-1] = self.obs[1:]
        nxt[self.episode_rows[1:] - 1] = self.final_obs
        return nxt

    def episode_returns(self) -> np.ndarray:
        return np.add.reduceat(self.reward, self.episode_rows[:-1]) if len(self) else np.zeros(0)

    def rows_of(self, episodes: np.ndarray) -> np.ndarray:
        """The rows of the given episodes (indices), in that order."""
        return np.concatenate([np.arange(self.episode_rows[e], self.episode_rows[e + 1]) for e in episodes])

    def best_episodes(self, percent: float, below: float | None = None) -> np.ndarray:
        """Sorted indices of the best ``percent`` % of the episodes (at least one) by return, of
        those whose return is below ``below`` when given; empty if none is."""
        returns = self.episode_returns()
        candidates = np.flatnonzero(returns < below) if below is not None else np.arange(len(returns))
        if not len(candidates):
            return candidates
        keep = max(1, int(np.ceil(len(candidates) * percent / 100)))
        return np.sort(candidates[np.argsort(-returns[candidates], kind="stable")[:keep]])

    def episodes(self, chosen: np.ndarray) -> Transitions:
        """Only the ``chosen`` episodes (indices, in the order given)."""
        rows = self.rows_of(chosen)
        lengths = np.diff(self.episode_rows)[chosen]
        episode_rows = np.concatenate([[0], np.cumsum(lengths)])
        return Transitions(**{f: getattr(self, f)[rows] for f in ROW_FIELDS},
                           final_obs=self.final_obs[chosen], episode_rows=episode_rows, manifest=self.manifest)


ROW_FIELDS = ("obs", "action", "reward", "terminated", "truncated", "episode_id", "env_index", "step",
              "logp", "value")


def join(parts: list[Transitions]) -> Transitions:
    """The episodes of several Transitions, one after another (replays seeded with other data)."""
    lengths = np.concatenate([np.diff(p.episode_rows) for p in parts])
    episode_rows = np.concatenate([[0], np.cumsum(lengths)])
    return Transitions(**{f: np.concatenate([getattr(p, f) for p in parts]) for f in ROW_FIELDS},
                       final_obs=np.concatenate([p.final_obs for p in parts]), episode_rows=episode_rows,
                       manifest=parts[-1].manifest)


def _fixed_list_to_numpy(column: pa.ChunkedArray, dim: int) -> np.ndarray:
    chunk = column.combine_chunks()
    values = chunk.values  # ignores the chunk's slice offset: applied below
    if values.null_count:  # children of null slots (final_obs off the last rows)
        values = values.fill_null(0)
    values = values.to_numpy(zero_copy_only=False)
    values = values[chunk.offset * dim : (chunk.offset + len(chunk)) * dim]
    return values.reshape(len(chunk), dim)


def load(root: Path, shards: list[int] | None = None, newest_rows: int | None = None) -> Transitions:
    """Read shards (all, chosen indices, or the newest shards holding ``newest_rows``) once."""
    root = Path(root)
    manifest = read_manifest(root)
    listed = manifest["shards"]
    chosen = list(range(len(listed))) if shards is None else list(shards)
    if newest_rows is not None:
        chosen, total = [], 0
        for i in reversed(range(len(listed))):
            if total >= newest_rows:
                break
            chosen.insert(0, i)
            total += listed[i]["rows"]
    dim = int(np.prod(manifest["observation"]["shape"]))
    tables = [read_shard(root, listed[i], manifest) for i in chosen]
    if not tables:
        from transformer_rl.datasets.format import arrow_schema

        tables = [arrow_schema(dim, manifest["observation"]["dtype"]).empty_table()]
    table = pa.concat_tables(tables)
    episode_id = table["episode_id"].to_numpy()
    n = len(episode_id)
    boundaries = np.flatnonzero(np.diff(episode_id)) + 1
    episode_rows = np.concatenate([[0], boundaries, [n]]).astype(np.int64) if n else np.zeros(1, np.int64)
    final = table["final_obs"].combine_chunks()
    final_obs = _fixed_list_to_numpy(pa.chunked_array([final]), dim)[episode_rows[1:] - 1]

    def floats(name: str) -> np.ndarray:
        return table[name].to_numpy(zero_copy_only=False).astype(np.float32)

    return Transitions(
        obs=_fixed_list_to_numpy(table["obs"], dim),
        action=table["action"].to_numpy().astype(np.int64),
        reward=table["reward"].to_numpy(),
        terminated=table["terminated"].to_numpy(zero_copy_only=False),
        truncated=table["truncated"].to_numpy(zero_copy_only=False),
        episode_id=episode_id,
        env_index=table["env_index"].to_numpy(),
        step=table["step"].to_numpy(),
        logp=floats("logp"),
        value=floats("value"),
        final_obs=final_obs,
        episode_rows=episode_rows,
        manifest=manifest,
    )
