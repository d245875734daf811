"""The dataset format: the Arrow schema and the manifest, declared once, here.

A dataset is a directory of Parquet shards plus ``manifest.json``. One row per transition,
episodes contiguous and in step order, never split across shards. The observation after the
last step of every episode is in ``final_obs`` on that episode's last row (null elsewhere), so
truncated episodes can bootstrap.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from transformer_rl.errors import DamagedData, UsageError
from transformer_rl.files import atomic_write_json

FORMAT = "trl-dataset"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"

OBS_TYPES = {"float32": pa.float32(), "uint8": pa.uint8()}


def arrow_schema(obs_dim: int, obs_dtype: str, env_id: str = "") -> pa.Schema:
    obs_type = pa.list_(OBS_TYPES[obs_dtype], obs_dim)
    return pa.schema(
        [
            pa.field("episode_id", pa.int64(), nullable=False),
            pa.field("env_index", pa.int32(), nullable=False),
            pa.field("step", pa.int32(), nullable=False),
            pa.field("obs", obs_type, nullable=False),
            pa.field("action", pa.int32(), nullable=False),
            pa.field("reward", pa.float32(), nullable=False),
            pa.field("terminated", pa.bool_(), nullable=False),
            pa.field("truncated", pa.bool_(), nullable=False),
            pa.field("logp", pa.float32()),
            pa.field("value", pa.float32()),
            pa.field("final_obs", obs_type),
        ],
        metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION), "env_id": env_id},
    )


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.parquet"


def sha256_bytes(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    atomic_write_json(root / MANIFEST, manifest)


def is_dataset(root: Path) -> bool:
    return (root / MANIFEST).is_file()


def read_manifest(root: Path) -> dict[str, Any]:
    """The manifest of the dataset at ``root``: UsageError if there is no dataset there,
    DamagedData if its manifest is unreadable or lacks what readers need."""
    root = Path(root)
    if not root.exists():
        raise UsageError(f"no dataset at {root}: the directory does not exist")
    if not root.is_dir():
        raise UsageError(f"{root} is a file, not a dataset directory")
    if not is_dataset(root):
        raise UsageError(f"{root} is not a trl dataset (no {MANIFEST}); collect one with `trl collect`")
    path = root / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DamagedData(f"{path} is not valid JSON ({e}); the dataset is damaged") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DamagedData(f"{path} is not a trl dataset manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise UsageError(
            f"{root} has format version {manifest.get('format_version')}; "
            f"this trl reads version {FORMAT_VERSION}"
        )
    problem = _structure_problem(manifest)
    if problem:
        raise DamagedData(f"{path} is damaged: {problem}")
    return manifest


_INT, _STR, _DICT, _LIST = (int,), (str,), (dict,), (list,)
_MANIFEST_KEYS = {"env_id": _STR, "env": _DICT, "observation": _DICT, "action": _DICT, "seed": _INT,
                  "segments": _LIST, "shards": _LIST}
_ENV_KEYS = {"env_id": _STR, "task": _STR, "obs_shape": _LIST, "obs_dtype": _STR, "num_actions": _INT,
             "max_episode_steps": _INT, "config": _DICT}
_SEGMENT_KEYS = {"env_index_offset": _INT, "seed": _INT, "num_envs": _INT, "batch_size": _INT,
                 "env_steps": _INT}
_SHARD_KEYS = {"file": _STR, "rows": _INT, "episodes": _INT, "first_episode_id": _INT, "bytes": _INT,
               "sha256": _STR}


def _structure_problem(manifest: dict[str, Any]) -> str | None:
    """What a manifest lacks that readers rely on, or None."""
    checks = [("", manifest, _MANIFEST_KEYS)]
    if isinstance(manifest.get("env"), dict):
        checks.append(("env.", manifest["env"], _ENV_KEYS))
    for name, items, keys in (("segments", manifest.get("segments"), _SEGMENT_KEYS),
                              ("shards", manifest.get("shards"), _SHARD_KEYS)):
        for i, item in enumerate(items if isinstance(items, list) else []):
            if not isinstance(item, dict):
                return f"{name}[{i}] is not an object"
            checks.append((f"{name}[{i}].", item, keys))
    for where, obj, keys in checks:
        for key, types in keys.items():
            if key not in obj:
                return f"missing key {where}{key}"
            if not isinstance(obj[key], types) or (types is _INT and isinstance(obj[key], bool)):
                return f"{where}{key} is not a {types[0].__name__}"
    env = manifest["env"]
    if env["obs_dtype"] not in OBS_TYPES or not all(isinstance(d, int) and d > 0 for d in env["obs_shape"]):
        return "env.obs_shape or env.obs_dtype is invalid"
    if env["env_id"] != manifest["env_id"]:
        return "env_id differs from env.env_id"
    for i, shard in enumerate(manifest["shards"]):
        if shard["file"] != shard_name(i):  # never a path out of the dataset
            return f"shards[{i}].file should be {shard_name(i)}, not {shard['file']!r}"
    return None


def new_manifest(spec_json: dict[str, Any], seed: int, envpool_version: str) -> dict[str, Any]:
    from transformer_rl import __version__

    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "env_id": spec_json["env_id"],
        "env": spec_json,  # EnvPool task, config, spaces: everything to re-simulate
        "observation": {"shape": spec_json["obs_shape"], "dtype": spec_json["obs_dtype"]},
        "action": {"type": "discrete", "n": spec_json["num_actions"]},
        "seed": seed,  # env stream `env_index` is seeded `seed + env_index`
        "envpool_version": envpool_version,
        "tool_version": __version__,
        "created": now,
        "updated": now,
        # One segment per collection run appended to this dataset: its pool played streams
        # env_index_offset .. env_index_offset + num_envs - 1.
        "segments": [],
        "shards": [],
    }


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


def read_shard(root: Path, shard: dict[str, Any], columns: list[str] | None = None) -> pa.Table:
    """A listed shard as a table, after checking its size and checksum against the manifest;
    DamagedData naming the file if it is missing, changed or unreadable."""
    path = Path(root) / shard["file"]
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise _damaged(path, "listed in the manifest but missing", root) from None
    problem = shard_problem(path, shard, data)
    if problem:
        raise _damaged(path, problem, root)
    try:
        return pq.read_table(pa.BufferReader(data), columns=columns)
    except (pa.ArrowException, OSError) as e:
        raise _damaged(path, f"unreadable Parquet ({' '.join(str(e).split())})", root) from e


def check_shards(root: Path, manifest: dict[str, Any]) -> None:
    """Every listed shard present, of its size and checksum (before appending to a dataset)."""
    for shard in manifest["shards"]:
        path = Path(root) / shard["file"]
        problem = shard_problem(path, shard)
        if problem:
            raise _damaged(path, problem, root)


def totals(manifest: dict[str, Any]) -> tuple[int, int]:
    """(rows, episodes) over all listed shards."""
    shards = manifest["shards"]
    return sum(s["rows"] for s in shards), sum(s["episodes"] for s in shards)
