"""Farama's Minari format, both ways.

`export_minari` writes a trl dataset as a local Minari dataset in Minari's Parquet data format;
`import_minari` (minari_import.py) turns a local Minari dataset (Parquet or Arrow data format) of
an env trl knows into a trl dataset. Minari's layout, under its datasets root (``MINARI_DATASETS_PATH``, else
``~/.minari/datasets``):

```
<namespace>/<name>-v<N>/data/metadata.json          ids, spaces (JSON strings), totals
<namespace>/<name>-v<N>/data/<episode>/metadata.json  {"id", "total_steps"}
<namespace>/<name>-v<N>/data/<episode>/part-0.parquet T + 1 rows: observations (the last one is
    the final observation), actions, rewards, terminations, truncations (the last row padding)
```

An export also records, under the metadata's ``trl`` key, the manifest (env, seed, segments) and
each episode's env stream, so that importing it back gives a dataset `trl datasets verify`
re-simulates. Any other Minari dataset imports as episodes no trl env stream played: verify says
it cannot re-simulate them. Minari's writer re-measures the whole folder after every episode
(quadratic in episodes), so the files are written here, in the layout its reader reads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from transformer_rl.datasets.reader import load
from transformer_rl.envs import EnvSpec
from transformer_rl.errors import UsageError
from transformer_rl.files import (
    atomic_write_json,
    check_creatable,
    lock_dir,
    output_path,
    removed_on_failure,
)

EPISODE_FILE = "part-0.parquet"  # Minari's name for an episode's one file


def minari_root(root: Path | None) -> Path:
    """Where Minari keeps local datasets: ``root``, else MINARI_DATASETS_PATH, else ~/.minari/datasets."""
    if root is not None:
        return Path(root)
    env = os.environ.get("MINARI_DATASETS_PATH")
    return Path(env) if env else Path.home() / ".minari" / "datasets"


def _minari():
    try:
        import minari
        from minari.dataset.minari_dataset import parse_dataset_id
        from minari.serialization import serialize_space
    except ImportError:
        raise UsageError("Minari export needs the minari package: pip install 'transformer-rl[minari]'") from None
    return minari.__version__, parse_dataset_id, serialize_space


def _spaces(spec: EnvSpec):
    """The dataset's observation and action spaces as gymnasium spaces."""
    import warnings

    import gymnasium as gym

    from transformer_rl.envs import _make_spec

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # float64 bounds cast to float32
        if spec.is_ram:
            obs = gym.spaces.Box(0, 255, spec.obs_shape, np.uint8)
        else:
            box = _make_spec(spec.task, spec.config).observation_space
            obs = gym.spaces.Box(box.low.astype(np.float32), box.high.astype(np.float32), spec.obs_shape, np.float32)
    return obs, gym.spaces.Discrete(spec.num_actions)


def export_minari(source: Path, dataset_id: str, root: Path | None = None) -> dict[str, Any]:
    """Write the dataset at ``source`` as Minari dataset ``dataset_id`` (Parquet data format)
    under ``root``; never over anything that exists. Returns what was written."""
    minari_version, parse_dataset_id, serialize_space = _minari()
    try:
        parse_dataset_id(dataset_id)
    except (ValueError, TypeError):
        raise UsageError(f"--minari {dataset_id!r} is not a Minari dataset id: give (namespace/)name-v<N>, "
                         "e.g. trl/cartpole-random-v0") from None
    data = load(source)  # every shard checked
    if not data.num_episodes:
        raise UsageError(f"{source} holds no episodes to export")
    base = minari_root(root)
    target = output_path(base / dataset_id, "--minari")
    if target.exists() or target.is_symlink():
        unfinished = "" if (target / "data" / "metadata.json").exists() else \
            " (an unfinished export? it has no data/metadata.json)"
        raise UsageError(f"Minari dataset {dataset_id} already exists at {target}{unfinished}; choose another "
                         "name or version (trl never replaces it)")
    check_creatable(target, "--minari")
    top = target  # the outermost folder this export creates: removed if it fails
    while not top.parent.exists():
        top = top.parent
    namespace = parse_dataset_id(dataset_id)[0]
    new_namespaces = [d for d in list(target.parents)[: len(namespace.split("/")) if namespace else 0]
                      if not d.exists()]
    try:
        target.mkdir(parents=True)
    except FileExistsError:
        raise UsageError(f"Minari dataset {dataset_id} was just created at {target} by another process; "
                         "choose another name") from None
    with removed_on_failure(top, created=True):
        lock = lock_dir(target, "a Minari dataset")
        try:
            for folder in new_namespaces:  # as Minari marks a namespace it makes
                atomic_write_json(folder / "namespace_metadata.json", {})
            steps = _write_episodes(target / "data", data)
            manifest = {k: v for k, v in data.manifest.items() if k != "shards"}
            obs_space, action_space = _spaces(EnvSpec.from_json(manifest["env"]))
            size = sum(p.stat().st_size for p in (target / "data").rglob("*") if p.is_file())
            policies = sorted({str((s.get("producer") or {}).get("policy", "?")) for s in manifest["segments"]})
            atomic_write_json(target / "data" / "metadata.json", {
                "dataset_id": dataset_id,
                "minari_version": minari_version,
                "total_episodes": data.num_episodes,
                "total_steps": steps,
                "data_format": "parquet",
                "jpeg_encoding": False,
                "observation_space": serialize_space(obs_space),
                "action_space": serialize_space(action_space),
                "dataset_size": round(size / 1e6, 1),
                "algorithm_name": "trl " + ", ".join(policies),
                "description": f"{manifest['env_id']} episodes exported by trl (EnvPool task "
                               f"{manifest['env']['task']}); the env is described under 'trl'",
                "trl": {"manifest": manifest,
                        "env_index": data.env_index[data.episode_rows[:-1]].astype(int).tolist()},
            })
        finally:
            lock.release()
    return {"path": str(target), "dataset_id": dataset_id, "root": str(base), "episodes": data.num_episodes,
            "steps": steps}


def _write_episodes(folder: Path, data) -> int:
    """One folder per episode: its T steps as T + 1 rows (the final observation last)."""
    dim = data.obs.shape[1]
    obs_type = pa.list_(pa.from_numpy_dtype(data.obs.dtype), dim)
    for e in range(data.num_episodes):
        a, b = int(data.episode_rows[e]), int(data.episode_rows[e + 1])
        t = b - a
        end = np.zeros(t + 1, bool)
        end[t - 1] = True
        obs = np.concatenate([data.obs[a:b], data.final_obs[e : e + 1]])
        table = pa.table({
            "observations": pa.FixedSizeListArray.from_arrays(pa.array(obs.reshape(-1)), type=obs_type),
            "actions": pa.array(np.append(data.action[a:b], 0).astype(np.int64)),
            "rewards": pa.array(np.append(data.reward[a:b], 0).astype(np.float32)),
            "terminations": pa.array(end & bool(data.terminated[b - 1])),
            "truncations": pa.array(end & bool(data.truncated[b - 1])),
        })
        (folder / str(e)).mkdir(parents=True)
        pq.write_table(table, folder / str(e) / EPISODE_FILE)
        (folder / str(e) / "metadata.json").write_text(json.dumps({"id": e, "total_steps": t}))
    return len(data)
