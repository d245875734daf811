"""Crash-safe appending of whole episodes to a dataset.

Shards are serialised in memory, hashed, written to a temporary name and renamed; the manifest
is replaced atomically after each shard. A crash at any instant leaves a dataset whose manifest
lists only complete shards; files it does not list are leftovers that `open_for_append` removes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from transformer_rl.datasets.format import (
    MANIFEST,
    arrow_schema,
    atomic_write_bytes,
    is_dataset,
    new_manifest,
    read_manifest,
    sha256_bytes,
    shard_name,
    totals,
    write_manifest,
)
from transformer_rl.envs import EnvSpec, envpool_version
from transformer_rl.errors import UsageError


@dataclass
class Episode:
    """One finished episode as arrays; obs[t] is the observation before action[t]."""

    env_index: int
    obs: np.ndarray  # (T, D)
    action: np.ndarray  # (T,) int32
    reward: np.ndarray  # (T,) float32
    final_obs: np.ndarray  # (D,) observation after the last step
    terminated: bool
    truncated: bool
    logp: np.ndarray | None = None  # (T,) float32, behaviour policy
    value: np.ndarray | None = None  # (T,) float32

    def __len__(self) -> int:
        return len(self.action)


def _fixed_list(values: np.ndarray, dim: int, mask: np.ndarray | None = None) -> pa.Array:
    flat = pa.array(values.reshape(-1))
    if mask is None:
        return pa.FixedSizeListArray.from_arrays(flat, dim)
    return pa.FixedSizeListArray.from_arrays(flat, dim, mask=pa.array(mask))


def episodes_to_table(episodes: list[Episode], first_id: int, schema: pa.Schema) -> pa.Table:
    lengths = np.array([len(e) for e in episodes], dtype=np.int64)
    n, dim = int(lengths.sum()), schema.field("obs").type.list_size
    last = np.cumsum(lengths) - 1
    is_last = np.zeros(n, dtype=bool)
    is_last[last] = True
    final = np.zeros((n, dim), dtype=episodes[0].obs.dtype)
    final[last] = np.stack([e.final_obs for e in episodes])
    term = np.zeros(n, dtype=bool)
    trunc = np.zeros(n, dtype=bool)
    term[last] = [e.terminated for e in episodes]
    trunc[last] = [e.truncated for e in episodes]
    starts = np.repeat(last - lengths + 1, lengths)

    def optional(name: str) -> pa.Array:
        parts = [getattr(e, name) for e in episodes]
        if all(p is None for p in parts):
            return pa.nulls(n, pa.float32())
        filled = [p if p is not None else np.full(len(e), np.nan, np.float32)
                  for p, e in zip(parts, episodes, strict=True)]
        return pa.array(np.concatenate(filled).astype(np.float32))

    columns = {
        "episode_id": pa.array(np.repeat(first_id + np.arange(len(episodes)), lengths)),
        "env_index": pa.array(np.repeat([e.env_index for e in episodes], lengths).astype(np.int32)),
        "step": pa.array((np.arange(n) - starts).astype(np.int32)),
        "obs": _fixed_list(np.concatenate([e.obs for e in episodes]), dim),
        "action": pa.array(np.concatenate([e.action for e in episodes]).astype(np.int32)),
        "reward": pa.array(np.concatenate([e.reward for e in episodes]).astype(np.float32)),
        "terminated": pa.array(term),
        "truncated": pa.array(trunc),
        "logp": optional("logp"),
        "value": optional("value"),
        "final_obs": _fixed_list(final, dim, mask=~is_last),
    }
    return pa.Table.from_pydict(columns, schema=schema)


class DatasetWriter:
    """Appends finished episodes to a dataset, one shard every ``shard_rows`` rows.

    Use as a context manager, or call ``close``; ``flush`` writes what is buffered now.
    """

    def __init__(self, root: Path, manifest: dict[str, Any], spec: EnvSpec, shard_rows: int):
        self.root, self.manifest, self.spec, self.shard_rows = root, manifest, spec, shard_rows
        self.schema = arrow_schema(spec.obs_dim, spec.obs_dtype, spec.env_id)
        self.buffer: list[Episode] = []
        self.buffered_rows = 0
        self.rows, self.episodes = totals(manifest)

    def add(self, episode: Episode) -> None:
        self.buffer.append(episode)
        self.buffered_rows += len(episode)
        if self.buffered_rows >= self.shard_rows:
            self.flush()

    def flush(self) -> None:
        if not self.buffer:
            write_manifest(self.root, self.manifest)  # keeps segment counters current
            return
        table = episodes_to_table(self.buffer, self.episodes, self.schema)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd", compression_level=1)
        data = sink.getvalue()
        index = len(self.manifest["shards"])
        name = shard_name(index)
        atomic_write_bytes(self.root / name, memoryview(data))
        self.manifest["shards"].append(
            {
                "file": name,
                "rows": table.num_rows,
                "episodes": len(self.buffer),
                "first_episode_id": self.episodes,
                "bytes": data.size,
                "sha256": sha256_bytes(memoryview(data)),
                "segment": len(self.manifest["segments"]) - 1,
            }
        )
        self.rows += table.num_rows
        self.episodes += len(self.buffer)
        self.buffer, self.buffered_rows = [], 0
        write_manifest(self.root, self.manifest)

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is None or exc_type is KeyboardInterrupt:
            self.close()


def open_for_append(
    root: Path,
    spec: EnvSpec,
    *,
    seed: int,
    num_envs: int,
    batch_size: int,
    producer: dict[str, Any],
    shard_rows: int,
    append: bool,
) -> DatasetWriter:
    """Create a dataset at ``root`` or, with ``append``, continue the one there.

    Each call opens a new segment: a fresh pool whose env streams get indices after all earlier
    ones, so every episode keeps a unique, re-simulable stream (seed + env_index).
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise UsageError(f"--out {root} is a file; give a directory for the dataset")
    if root.exists() and is_dataset(root):
        if not append:
            raise UsageError(
                f"{root} already holds a dataset; pass --resume to continue it or choose another --out"
            )
        manifest = read_manifest(root)
        check_compatible(manifest, spec, root)
        _remove_unlisted(root, manifest)
    elif root.exists() and any(root.iterdir()):
        raise UsageError(f"--out {root} is a non-empty directory that is not a dataset; choose another")
    else:
        root.mkdir(parents=True, exist_ok=True)
        manifest = new_manifest(spec.to_json(), seed, envpool_version())
    offset = sum(s["num_envs"] for s in manifest["segments"])
    manifest["segments"].append(
        {
            "env_index_offset": offset,
            "seed": manifest["seed"] + offset,
            "num_envs": num_envs,
            "batch_size": batch_size,
            "env_steps": 0,
            "producer": producer,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
    )
    write_manifest(root, manifest)
    return DatasetWriter(root, manifest, spec, shard_rows)


def check_compatible(manifest: dict[str, Any], spec: EnvSpec, root: Path) -> None:
    theirs = manifest["env"]
    if theirs["env_id"] != spec.env_id:
        raise UsageError(
            f"{root} holds {theirs['env_id']} data; cannot append {spec.env_id} (use another --out)"
        )
    if theirs != spec.to_json():
        raise UsageError(
            f"{root} was collected with another {spec.env_id} configuration "
            f"({theirs['config']}); use the same options or another --out"
        )


def _remove_unlisted(root: Path, manifest: dict[str, Any]) -> None:
    listed = {s["file"] for s in manifest["shards"]} | {MANIFEST}
    for path in root.iterdir():
        if path.name not in listed and (path.suffix in (".parquet", ".tmp")):
            path.unlink()
