"""A listed shard checked before use: its file against the manifest (size, SHA-256), its rows
against the manifest's schema and what it declares (ids, steps, end flags, final observations,
actions and env streams in range); `read_shard` is the one place every reader reads a shard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from transformer_rl.datasets.format import manifest_schema, sha256_bytes, sha256_file
from transformer_rl.errors import DamagedData


def shard_problem(path: Path, shard: dict[str, Any], data: bytes | None = None) -> str | None:
    """What is wrong with a listed shard's file (missing, another size, another checksum), or
    None; ``data`` is the file's bytes when already read."""
    if data is None and not path.is_file():
        return "listed in the manifest but missing"
    size = len(data) if data is not None else path.stat().st_size
    if size != shard["bytes"]:
        return f"{size} bytes, manifest says {shard['bytes']}"
    if (sha256_bytes(data) if data is not None else sha256_file(path)) != shard["sha256"]:
        return "checksum mismatch (the file changed after it was written)"
    return None


def _damaged(path: Path, problem: str, root: Path) -> DamagedData:
    return DamagedData(f"{path}: {problem}; the dataset is damaged "
                       f"(`trl datasets validate {root}` lists every problem)")


def read_shard(root: Path, shard: dict[str, Any], manifest: dict[str, Any],
               columns: list[str] | None = None) -> pa.Table:
    """A listed shard as a table, after checking its size and checksum against the manifest and
    its rows against the manifest's schema (`table_problems`); DamagedData naming the file if it
    is missing, changed, unreadable or not what the manifest describes."""
    path = Path(root) / shard["file"]
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise _damaged(path, "listed in the manifest but missing", root) from None
    problem = shard_problem(path, shard, data)
    if problem:
        raise _damaged(path, problem, root)
    try:
        # ParquetFile.read, not read_table: read_table's async scan can drop its last hold on the
        # Python bytes from an Arrow thread after returning, and if the process is exiting then
        # (a refused writer's error), that thread aborts it ("terminate called ...", SIGABRT)
        table = pq.ParquetFile(pa.BufferReader(data)).read()
    except (pa.ArrowException, OSError) as e:
        raise _damaged(path, f"unreadable Parquet ({' '.join(str(e).split())})", root) from e
    problems = table_problems(table, shard, manifest)
    if problems:
        raise _damaged(path, problems[0].lstrip(": "), root)
    return table.select(columns) if columns is not None else table


def check_shards(root: Path, manifest: dict[str, Any]) -> None:
    """Every listed shard present, of its size and checksum (before appending to a dataset)."""
    for shard in manifest["shards"]:
        path = Path(root) / shard["file"]
        problem = shard_problem(path, shard)
        if problem:
            raise _damaged(path, problem, root)


def table_problems(table: pa.Table, shard: dict[str, Any], manifest: dict[str, Any]) -> list[str]:
    """What is wrong with a listed shard's rows against the manifest (its schema, row count,
    episode ids, steps, end flags, final observations, action and env ranges), each starting
    with ": " or " episode N: " to follow the shard's name; empty if nothing is."""
    schema = manifest_schema(manifest)
    if not table.schema.equals(schema, check_metadata=False):
        theirs = {f.name: f for f in table.schema}
        wrong = ([f.name for f in schema if f.name not in theirs or not theirs[f.name].equals(f)]
                 or sorted(set(theirs) - set(schema.names)))
        expected = schema.field(wrong[0]).type if wrong[0] in schema.names else "not in the format"
        return [f": column {wrong[0]} is not the format's ({expected})"]
    if table.num_rows != shard["rows"]:
        return [f": {table.num_rows} rows, manifest says {shard['rows']}"]
    return _row_problems("", table, shard["first_episode_id"], shard, manifest["action"]["n"],
                         sum(s["num_envs"] for s in manifest["segments"]))


def _row_problems(name, table, first_id, shard, n_actions, n_streams) -> list[str]:
    ids = table["episode_id"].to_numpy()
    if len(ids) == 0:
        return [f"{name}: empty shard"]
    starts = np.concatenate([[0], np.flatnonzero(np.diff(ids)) + 1])
    run_ids = ids[starts]
    expected = first_id + np.arange(shard["episodes"])
    if len(run_ids) != len(expected) or not np.array_equal(run_ids, expected):
        bad = _first_diff(run_ids, expected)
        return [f"{name} episode {bad}: episode ids not contiguous from {first_id} in order"]
    lengths = np.diff(np.concatenate([starts, [len(ids)]]))
    step = table["step"].to_numpy()
    expected_step = np.arange(len(ids)) - np.repeat(starts, lengths)
    problems = []
    if not np.array_equal(step, expected_step):
        row = int(np.flatnonzero(step != expected_step)[0])
        problems.append(f"{name} episode {ids[row]}: steps out of order at row {row}")
    last = np.zeros(len(ids), bool)
    last[starts + lengths - 1] = True
    term = table["terminated"].to_numpy(zero_copy_only=False)
    trunc = table["truncated"].to_numpy(zero_copy_only=False)
    ends = term.astype(int) + trunc.astype(int)
    wrong = (ends != last.astype(int))
    if wrong.any():
        row = int(np.flatnonzero(wrong)[0])
        problems.append(f"{name} episode {ids[row]}: needs exactly one end flag, on its last row only")
    has_final = table["final_obs"].is_valid().to_numpy(zero_copy_only=False)
    if not np.array_equal(has_final, last):
        row = int(np.flatnonzero(has_final != last)[0])
        problems.append(f"{name} episode {ids[row]}: final_obs must be set on last rows only")
    action = table["action"].to_numpy()
    if ((action < 0) | (action >= n_actions)).any():
        row = int(np.flatnonzero((action < 0) | (action >= n_actions))[0])
        problems.append(f"{name} episode {ids[row]}: action {action[row]} outside 0..{n_actions - 1}")
    reward = table["reward"].to_numpy()
    if not np.isfinite(reward).all():
        row = int(np.flatnonzero(~np.isfinite(reward))[0])
        problems.append(f"{name} episode {ids[row]}: reward {reward[row]} is not a finite number")
    env_index = table["env_index"].to_numpy()
    if ((env_index < 0) | (env_index >= n_streams)).any():
        problems.append(f"{name}: env_index outside the manifest's {n_streams} streams")
    per_episode = env_index[starts]
    if not np.array_equal(np.repeat(per_episode, lengths), env_index):
        problems.append(f"{name}: env_index changes inside an episode")
    return problems


def _first_diff(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    diff = np.flatnonzero(a[:n] != b[:n])
    return int(a[diff[0]]) if len(diff) else int(a[n - 1] if n else -1)
