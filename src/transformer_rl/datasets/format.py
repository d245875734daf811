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

from transformer_rl.errors import UsageError
from transformer_rl.files import atomic_write_bytes

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
    atomic_write_bytes(root / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())


def is_dataset(root: Path) -> bool:
    return (root / MANIFEST).is_file()


def read_manifest(root: Path) -> dict[str, Any]:
    """The manifest of the dataset at ``root``, or UsageError saying what is wrong."""
    root = Path(root)
    if not root.exists():
        raise UsageError(f"no dataset at {root}: the directory does not exist")
    if not root.is_dir():
        raise UsageError(f"{root} is a file, not a dataset directory")
    if not is_dataset(root):
        raise UsageError(f"{root} is not a trl dataset (no {MANIFEST}); collect one with `trl collect`")
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{root / MANIFEST} is not valid JSON ({e}); the dataset is damaged") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UsageError(f"{root / MANIFEST} is not a trl dataset manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise UsageError(
            f"{root} has format version {manifest.get('format_version')}; "
            f"this trl reads version {FORMAT_VERSION}"
        )
    return manifest


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


def read_shard(root: Path, file: str, columns: list[str] | None = None) -> pa.Table:
    """A listed shard as a table, or a one-line UsageError naming it (missing or damaged)."""
    try:
        return pq.read_table(Path(root) / file, columns=columns)
    except (pa.ArrowException, OSError) as e:
        reason = "missing" if isinstance(e, FileNotFoundError) else " ".join(str(e).split())
        raise UsageError(
            f"{Path(root) / file}: cannot read the shard ({reason}); "
            f"check the dataset with `trl datasets validate {root}`"
        ) from e


def totals(manifest: dict[str, Any]) -> tuple[int, int]:
    """(rows, episodes) over all listed shards."""
    shards = manifest["shards"]
    return sum(s["rows"] for s in shards), sum(s["episodes"] for s in shards)
