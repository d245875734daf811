"""Finished episodes as flat columns (`EpisodeBatch`), and as a shard's Arrow table."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import pyarrow as pa


@dataclass
class EpisodeBatch:
    """Finished episodes as flat columns: R rows in episode order, E episodes, D obs dims.

    obs[r] is the observation before action[r]; episode e's rows are lengths[:e].sum() onward.
    """

    obs: np.ndarray  # (R, D)
    action: np.ndarray  # (R,) int32
    reward: np.ndarray  # (R,) float32
    logp: np.ndarray | None  # (R,) float32, behaviour policy, or None
    value: np.ndarray | None  # (R,) float32, or None
    lengths: np.ndarray  # (E,) int64
    env_index: np.ndarray  # (E,) int32
    terminated: np.ndarray  # (E,) bool
    truncated: np.ndarray  # (E,) bool, never together with terminated
    final_obs: np.ndarray  # (E, D) observation after each episode's last step

    @property
    def rows(self) -> int:
        return len(self.action)

    @property
    def episodes(self) -> int:
        return len(self.lengths)

    def returns(self) -> np.ndarray:
        starts = np.cumsum(self.lengths) - self.lengths
        return np.add.reduceat(self.reward, starts) if self.rows else np.zeros(0, np.float32)

    @staticmethod
    def concat(batches: list[EpisodeBatch]) -> EpisodeBatch:
        def cat(name: str):
            parts = [getattr(b, name) for b in batches]
            if any(p is None for p in parts):
                if all(p is None for p in parts):
                    return None
                parts = [p if p is not None else np.full(b.rows, np.nan, np.float32)
                         for p, b in zip(parts, batches, strict=True)]
            return np.concatenate(parts)

        return EpisodeBatch(**{f.name: cat(f.name) for f in fields(EpisodeBatch)})


def _fixed_list(values: np.ndarray, dim: int, mask: np.ndarray | None = None) -> pa.Array:
    flat = pa.array(values.reshape(-1))
    if mask is None:
        return pa.FixedSizeListArray.from_arrays(flat, dim)
    return pa.FixedSizeListArray.from_arrays(flat, dim, mask=pa.array(mask))


def batch_to_table(batch: EpisodeBatch, first_id: int, schema: pa.Schema) -> pa.Table:
    n, dim, lengths = batch.rows, schema.field("obs").type.list_size, batch.lengths
    last = np.cumsum(lengths) - 1
    is_last = np.zeros(n, dtype=bool)
    is_last[last] = True
    final = np.zeros((n, dim), dtype=batch.obs.dtype)
    final[last] = batch.final_obs
    term = np.zeros(n, dtype=bool)
    trunc = np.zeros(n, dtype=bool)
    term[last] = batch.terminated
    trunc[last] = batch.truncated
    starts = np.repeat(last - lengths + 1, lengths)

    def optional(values: np.ndarray | None) -> pa.Array:
        return pa.nulls(n, pa.float32()) if values is None else pa.array(values.astype(np.float32))

    columns = {
        "episode_id": pa.array(np.repeat(first_id + np.arange(batch.episodes), lengths)),
        "env_index": pa.array(np.repeat(batch.env_index, lengths).astype(np.int32)),
        "step": pa.array((np.arange(n) - starts).astype(np.int32)),
        "obs": _fixed_list(batch.obs, dim),
        "action": pa.array(batch.action.astype(np.int32)),
        "reward": pa.array(batch.reward.astype(np.float32)),
        "terminated": pa.array(term),
        "truncated": pa.array(trunc),
        "logp": optional(batch.logp),
        "value": optional(batch.value),
        "final_obs": _fixed_list(final, dim, mask=~is_last),
    }
    return pa.Table.from_pydict(columns, schema=schema)
