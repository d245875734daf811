"""The dataset format: the Arrow schema and the manifest, declared once, here.

A dataset is a directory of Parquet shards plus its manifest. One row per transition, episodes
contiguous and in step order, never split across shards. The observation after the last step of
every episode is in ``final_obs`` on that episode's last row (null elsewhere), so truncated
episodes can bootstrap.

Version 2 keeps the manifest as JSON in the key-value metadata of ``_manifest.parquet``, a
Parquet file of the dataset's schema with no rows: the folder then holds Parquet files only, so
pandas, pyarrow, polars and DuckDB read it with their plainest call (polars refuses a folder
holding any other file, and pyarrow and pandas skip names starting with ``_``). Version 1
(``manifest.json``) still reads, validates, verifies and takes appends, as version 1.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from transformer_rl.envs import EnvSpec
from transformer_rl.errors import DamagedData, UsageError
from transformer_rl.files import atomic_write_bytes, atomic_write_json
from transformer_rl.schema import AnyJSON, Bool, Const, Int, List, Obj, Str, problem
from transformer_rl.settings import MAX_SEED

FORMAT = "trl-dataset"
FORMAT_VERSION = 2  # what trl writes; it reads 1 and 2
MANIFEST = "_manifest.parquet"  # version 2
MANIFEST_V1 = "manifest.json"
MANIFEST_NAMES = {1: MANIFEST_V1, 2: MANIFEST}
MANIFEST_KEY = b"trl.manifest"  # the key of the manifest's JSON in _manifest.parquet

OBS_TYPES = {"float32": pa.float32(), "uint8": pa.uint8()}


def arrow_schema(obs_dim: int, obs_dtype: str, env_id: str = "", version: int = FORMAT_VERSION) -> pa.Schema:
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
        metadata={"format": FORMAT, "format_version": str(version), "env_id": env_id},
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


def manifest_schema(manifest: dict[str, Any]) -> pa.Schema:
    """The Arrow schema of the dataset's shards (and of its version-2 manifest file)."""
    obs = manifest["observation"]
    return arrow_schema(int(np.prod(obs["shape"])), obs["dtype"], manifest["env_id"], manifest["format_version"])


def encode_manifest(manifest: dict[str, Any]) -> bytes:
    """A version-2 manifest file: no rows, the shards' schema, the manifest's JSON as metadata."""
    schema = manifest_schema(manifest)
    schema = schema.with_metadata({**schema.metadata, MANIFEST_KEY: json.dumps(manifest).encode()})
    sink = pa.BufferOutputStream()
    pq.write_table(schema.empty_table(), sink)
    return sink.getvalue().to_pybytes()


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    """Replace the manifest atomically, in the file of its format version."""
    manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if manifest["format_version"] == 1:
        atomic_write_json(root / MANIFEST_V1, manifest)
    else:  # a hidden temporary name: pyarrow and pandas skip it while it is written
        atomic_write_bytes(root / MANIFEST, encode_manifest(manifest), hidden_tmp=True)


def manifest_path(root: Path) -> Path | None:
    """The dataset's manifest file (version 2's, else version 1's), or None if there is none."""
    for name in (MANIFEST, MANIFEST_V1):
        if (Path(root) / name).is_file():
            return Path(root) / name
    return None


def is_dataset(root: Path) -> bool:
    return manifest_path(root) is not None


def _manifest_text(path: Path) -> tuple[str, pa.Schema | None]:
    """The manifest's JSON text and, for version 2, the Arrow schema of its Parquet file (which
    must hold no rows, so that readers of the folder see the shards' rows only)."""
    data = path.read_bytes()
    if path.name == MANIFEST_V1:
        return data.decode(), None
    try:
        file = pq.ParquetFile(pa.BufferReader(data))
        meta, schema = file.metadata, file.schema_arrow
    except (pa.ArrowException, OSError) as e:
        raise DamagedData(f"{path} is not a readable Parquet file ({' '.join(str(e).split())[:120]}); "
                          "the dataset is damaged") from e
    text = (meta.metadata or {}).get(MANIFEST_KEY)
    if text is None:
        raise DamagedData(f"{path} holds no trl manifest; the dataset is damaged")
    if meta.num_rows:
        raise DamagedData(f"{path} holds {meta.num_rows} rows (a manifest holds none); the dataset is damaged")
    return text.decode(), schema


def read_manifest(root: Path) -> dict[str, Any]:
    """The manifest of the dataset at ``root``: UsageError if there is no dataset there,
    DamagedData if its manifest is unreadable or not what MANIFEST_SCHEMA declares."""
    root = Path(root)
    if not root.exists():
        raise UsageError(f"no dataset at {root}: the directory does not exist")
    if not root.is_dir():
        raise UsageError(f"{root} is a file, not a dataset directory")
    path = manifest_path(root)
    if path is None:
        raise UsageError(f"{root} is not a trl dataset (no {MANIFEST}); collect one with `trl collect`")
    try:
        text, file_schema = _manifest_text(path)
        manifest = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise DamagedData(f"{path} is not valid JSON ({' '.join(str(e).split())}); the dataset is damaged") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DamagedData(f"{path} is not a trl dataset manifest")
    version = manifest.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool):
        if version not in MANIFEST_NAMES:
            raise UsageError(f"{root} has format version {version}; this trl reads versions 1 and 2")
        if MANIFEST_NAMES[version] != path.name:
            raise DamagedData(f"{path} says format version {version}, whose manifest is "
                              f"{MANIFEST_NAMES[version]}; the dataset is damaged")
    problem = manifest_problem(manifest)
    if problem:
        raise DamagedData(f"{path} is damaged: {problem}")
    if file_schema is not None and not file_schema.equals(manifest_schema(manifest), check_metadata=False):
        raise DamagedData(f"{path} is damaged: its schema is not the format's for this manifest")
    return manifest


_SEGMENT = Obj({"env_index_offset": Int(ge=0), "seed": Int(ge=0, le=MAX_SEED), "num_envs": Int(ge=1),
                "batch_size": Int(ge=1), "env_steps": Int(ge=0)},
               # imported: its episodes were not played by this pool (Minari data), so verify cannot replay them
               optional={"producer": AnyJSON(), "started": Str(), "imported": Bool()})
_SHARD = Obj({"file": Str(), "rows": Int(ge=1), "episodes": Int(ge=1), "first_episode_id": Int(ge=0),
              "bytes": Int(ge=1), "sha256": Str()}, optional={"segment": Int(ge=0)})
MANIFEST_SCHEMA = Obj({
    "format": Const(FORMAT), "format_version": Int(ge=1, le=FORMAT_VERSION), "env_id": Str(), "env": AnyJSON(),
    "observation": Obj({"shape": List(Int(ge=1), min_len=1), "dtype": Str(tuple(OBS_TYPES))}),
    "action": Obj({"type": Const("discrete"), "n": Int(ge=1)}),
    "seed": Int(ge=0, le=MAX_SEED), "segments": List(_SEGMENT), "shards": List(_SHARD),
}, optional={"source": Obj({"kind": Const("minari"), "dataset_id": Str(), "resimulable": Bool()})})


def manifest_problem(manifest: dict[str, Any]) -> str | None:
    """What is wrong with a manifest (its declared structure, then how its parts agree), or None."""
    found = problem(MANIFEST_SCHEMA, manifest)
    if found:
        return found
    try:
        spec = EnvSpec.from_json(manifest["env"])
    except UsageError as e:
        return str(e)
    if spec.env_id != manifest["env_id"]:
        return "env_id differs from env.env_id"
    if (manifest["observation"] != {"shape": list(spec.obs_shape), "dtype": spec.obs_dtype}
            or manifest["action"]["n"] != spec.num_actions):
        return f"observation or action space differs from what env {spec.env_id} has"
    offset = 0
    for i, segment in enumerate(manifest["segments"]):
        if segment["env_index_offset"] != offset or segment["seed"] != manifest["seed"] + offset:
            return f"segments[{i}] does not continue the env streams before it (offset {offset})"
        if segment["seed"] + segment["num_envs"] - 1 > MAX_SEED:
            return f"segments[{i}] seeds env streams beyond {MAX_SEED:,}"
        offset += segment["num_envs"]
    next_id = 0
    for i, shard in enumerate(manifest["shards"]):
        if shard["file"] != shard_name(i):  # never a path out of the dataset
            return f"shards[{i}].file should be {shard_name(i)}, not {shard['file']!r}"
        if shard["first_episode_id"] != next_id or shard["rows"] < shard["episodes"]:
            return f"shards[{i}] does not continue the episodes before it (first id {next_id})"
        if shard.get("segment", 0) >= max(1, len(manifest["segments"])):
            return f"shards[{i}].segment names no segment"
        next_id += shard["episodes"]
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


def totals(manifest: dict[str, Any]) -> tuple[int, int]:
    """(rows, episodes) over all listed shards."""
    shards = manifest["shards"]
    return sum(s["rows"] for s in shards), sum(s["episodes"] for s in shards)
