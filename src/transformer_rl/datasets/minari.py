"""Farama's Minari format, both ways.

`export_minari` writes a trl dataset as a local Minari dataset in Minari's Parquet data format;
`import_minari` turns a local Minari dataset (Parquet or Arrow data format) of an env trl knows
into a trl dataset. Minari's layout, under its datasets root (``MINARI_DATASETS_PATH``, else
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
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from transformer_rl.datasets.format import FORMAT_VERSION, manifest_problem
from transformer_rl.datasets.reader import _fixed_list_to_numpy, load
from transformer_rl.datasets.writer import EpisodeBatch, open_for_append
from transformer_rl.envs import RAM_SUFFIX, EnvSpec, known_ids, resolve
from transformer_rl.errors import DamagedData, UsageError
from transformer_rl.files import (
    atomic_write_json,
    check_creatable,
    lock_dir,
    output_path,
    read_json,
    removed_on_failure,
)
from transformer_rl.schema import AnyJSON, Bool, Const, Int, List, Obj, Opt, Str, problem

SHARD_ROWS = 100_000  # rows per shard of an imported dataset (as `trl collect`)
EPISODE_FILE = "part-0.parquet"  # Minari's name for an episode's one file
_SKIP = ["_", ".", "metadata.json"]  # what Minari's reader skips in an episode folder
_ATARI_V5 = re.compile(r"ALE/(?P<game>\w+)-ram-v5")

# data/metadata.json as trl reads it (Minari 0.5); the spaces are JSON strings, checked below
MINARI_METADATA = Obj(
    {"dataset_id": Str(), "minari_version": Str(), "total_episodes": Int(ge=0), "total_steps": Int(ge=0),
     "data_format": Str(), "observation_space": Str(), "action_space": Str()},
    optional={"env_spec": Opt(Str()), "jpeg_encoding": Bool(),
              "trl": Obj({"manifest": AnyJSON(), "env_index": List(Int(ge=0))})})
_BOX = Obj({"type": Const("Box"), "dtype": Str(), "shape": List(Int(ge=1), min_len=1)})
_DISCRETE = Obj({"type": Const("Discrete"), "n": Int(ge=1)}, optional={"start": Int()})
_ENV_SPEC = Obj({"id": Str()}, optional={"max_episode_steps": Opt(Int(ge=1)), "kwargs": Opt(AnyJSON())})


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


# -- export ---------------------------------------------------------------------------------------


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


# -- import ---------------------------------------------------------------------------------------


def find_minari(name: str, root: Path | None = None) -> Path:
    """The data folder of a local Minari dataset: ``name`` is a path to it (the dataset's folder
    or its data/), or a dataset id under the Minari root."""
    path = Path(name)
    for data in (path / "data", path):
        if (data / "metadata.json").is_file():
            return data
    if path.exists():
        raise UsageError(f"{path} is not a Minari dataset (no data/metadata.json)")
    base = minari_root(root)
    if not (base / name / "data" / "metadata.json").is_file():
        raise UsageError(f"no local Minari dataset {name!r} under {base}; give its id and --minari-root "
                         "(or MINARI_DATASETS_PATH), or its path")
    return base / name / "data"


def _space(text: str, schema, what: str, path: Path) -> dict[str, Any]:
    try:
        space = json.loads(text)
    except (ValueError, RecursionError):
        raise DamagedData(f"{path}: {what} is not valid JSON: a damaged Minari dataset") from None
    kind = space.get("type") if isinstance(space, dict) else None
    if kind != schema.keys["type"].value:
        need = "a flat Box" if what == "observation_space" else "Discrete actions"
        raise UsageError(f"{path}: the {what} is {kind or space!r}; trl imports {need}")
    found = problem(schema, space, what)
    if found:
        raise DamagedData(f"{path}: {found}: a damaged Minari dataset")
    return space


def _env_of(meta: dict[str, Any], env: str | None, path: Path) -> tuple[EnvSpec, str]:
    """The env of a Minari dataset, and where that came from: --env, the trl key of a trl
    export, or its gymnasium env_spec (EnvPool's id, or ALE/<Game>-ram-v5 as <Game>-ram)."""
    if env is not None:
        return resolve(env), "--env"
    if "trl" in meta:
        recorded = meta["trl"]["manifest"]
        if not isinstance(recorded, dict):
            raise DamagedData(f"{path}: trl.manifest is not an object: a damaged Minari dataset")
        return EnvSpec.from_json(recorded.get("env")), "trl"
    if meta.get("env_spec") is None:
        raise UsageError(f"{path} records no env (no env_spec); give --env with the EnvPool id it was played on")
    try:
        env_spec = json.loads(meta["env_spec"])
    except (ValueError, RecursionError):
        raise DamagedData(f"{path}: env_spec is not valid JSON: a damaged Minari dataset") from None
    found = problem(_ENV_SPEC, env_spec, "env_spec")
    if found:
        raise DamagedData(f"{path}: {found}: a damaged Minari dataset")
    gym_id, kwargs = env_spec["id"], env_spec.get("kwargs")
    kwargs = kwargs if isinstance(kwargs, dict) else {}
    atari = _ATARI_V5.fullmatch(gym_id)
    try:
        if atari:
            sticky, skip = kwargs.get("repeat_action_probability", 0.25), kwargs.get("frameskip", 4)
            if isinstance(sticky, float | int) and isinstance(skip, int) and not isinstance(skip, bool | float):
                return resolve(atari["game"] + RAM_SUFFIX, sticky=float(sticky), frame_skip=skip), "env_spec"
        elif gym_id in known_ids():
            spec, limit = resolve(gym_id), env_spec.get("max_episode_steps")
            # another time limit than EnvPool's is a setting of the env; the same one is none
            return (spec if limit in (None, spec.max_episode_steps) else resolve(gym_id, max_episode_steps=limit),
                    "env_spec")
    except UsageError:
        pass
    raise UsageError(f"{path} was recorded on {gym_id!r}, which trl cannot map to an EnvPool env; "
                     "give --env with the id it matches (see `trl envs`)")


def _check_spaces(spec: EnvSpec, obs: dict[str, Any], action: dict[str, Any], path: Path) -> None:
    if obs["shape"] != list(spec.obs_shape) or obs["dtype"] != spec.obs_dtype:
        raise UsageError(f"{path}: observations are {obs['dtype']} {tuple(obs['shape'])}, but {spec.env_id} has "
                         f"{spec.obs_dtype} {spec.obs_shape}; give the --env it was played on")
    if action["n"] != spec.num_actions or action.get("start", 0) != 0:
        raise UsageError(f"{path}: actions are Discrete({action['n']}, start={action.get('start', 0)}), but "
                         f"{spec.env_id} has Discrete({spec.num_actions}); give the --env it was played on")


def _restored(meta: dict[str, Any], spec: EnvSpec, path: Path) -> tuple[dict[str, Any], np.ndarray] | None:
    """From a trl export: its seed, segments and each episode's env stream (so verify can replay
    them), or None if its episodes are no longer the ones exported (another count)."""
    block = meta.get("trl")
    if block is None or len(block["env_index"]) != meta["total_episodes"]:
        return None
    recorded = block["manifest"]
    manifest = {**recorded, "format_version": FORMAT_VERSION, "shards": []} if isinstance(recorded, dict) else {}
    found = manifest_problem(manifest) if manifest else "the trl key's manifest is not an object"
    if found:
        raise DamagedData(f"{path}: trl.manifest: {found}: a damaged Minari dataset")
    if manifest["env"] != spec.to_json():
        raise UsageError(f"{path} was exported from {manifest['env_id']} data with another configuration than "
                         f"--env {spec.env_id}; leave --env out")
    env_index = np.array(block["env_index"], np.int32)
    if len(env_index) and env_index.max() >= sum(s["num_envs"] for s in manifest["segments"]):
        raise DamagedData(f"{path}: trl.env_index names env streams the segments do not: a damaged Minari dataset")
    return manifest, env_index


def _episode(folder: Path, fmt: str, spec: EnvSpec, e: int) -> tuple[dict[str, np.ndarray], str]:
    """Episode ``e``'s arrays, checked against the spaces, and how it ended."""
    where = folder / str(e)
    if not where.is_dir():
        raise DamagedData(f"{where} is missing: a damaged Minari dataset")
    try:
        table = ds.dataset(where, format=fmt, ignore_prefixes=_SKIP).to_table()
    except (pa.ArrowException, OSError) as e_:
        raise DamagedData(f"{where}: unreadable {fmt} data ({' '.join(str(e_).split())[:120]}): "
                          "a damaged Minari dataset") from None
    types = {f.name: f.type for f in table.schema}
    obs_type = types.get("observations")
    wanted = {"observations": obs_type is not None and pa.types.is_fixed_size_list(obs_type)
              and obs_type.list_size == spec.obs_dim
              and obs_type.value_type == pa.from_numpy_dtype(np.dtype(spec.obs_dtype)),
              "actions": pa.types.is_integer(types.get("actions", pa.null())),
              "rewards": pa.types.is_floating(types.get("rewards", pa.null()))
              or pa.types.is_integer(types.get("rewards", pa.null())),
              "terminations": pa.types.is_boolean(types.get("terminations", pa.null())),
              "truncations": pa.types.is_boolean(types.get("truncations", pa.null()))}
    wrong = [name for name, ok in wanted.items() if not ok]
    if wrong:
        raise DamagedData(f"{where}: column {wrong[0]} is missing or not of the dataset's spaces: "
                          "a damaged Minari dataset")
    t = table.num_rows - 1  # steps: the last row holds the final observation
    if t < 1:
        raise UsageError(f"{where}: episode {e} has no steps; trl records episodes of at least one")
    obs_col = table["observations"].combine_chunks()
    steps = table.slice(0, t)
    columns = ("actions", "rewards", "terminations", "truncations")
    if obs_col.null_count or obs_col.values.null_count or any(steps[c].null_count for c in columns):
        raise DamagedData(f"{where}: null values: a damaged Minari dataset")
    out = {"obs": _fixed_list_to_numpy(table["observations"], spec.obs_dim),
           "action": steps["actions"].to_numpy(), "reward": steps["rewards"].to_numpy().astype(np.float32)}
    if ((out["action"] < 0) | (out["action"] >= spec.num_actions)).any():
        raise DamagedData(f"{where}: an action outside 0..{spec.num_actions - 1}: a damaged Minari dataset")
    if not np.isfinite(out["reward"]).all():
        raise DamagedData(f"{where}: a reward that is not a finite float32: a damaged Minari dataset")
    term = steps["terminations"].to_numpy(zero_copy_only=False)
    trunc = steps["truncations"].to_numpy(zero_copy_only=False)
    if term[:-1].any() or trunc[:-1].any():
        raise DamagedData(f"{where}: episode {e} ends before its last step: a damaged Minari dataset")
    # both flags: the game ended (no bootstrap); neither: the recording stopped, a truncation
    end = "terminated" if term[-1] else "truncated" if trunc[-1] else "unflagged"
    return out, end


def import_minari(name: str, out: Path, *, root: Path | None = None, env: str | None = None,
                  shard_rows: int = SHARD_ROWS) -> dict[str, Any]:
    """Turn the local Minari dataset ``name`` (an id under ``root``, or a path) into a new trl
    dataset at ``out``. Returns what was imported."""
    folder = find_minari(name, root)
    meta_path = folder / "metadata.json"
    meta = read_json(meta_path, MINARI_METADATA, "Minari dataset")
    fmt = meta["data_format"]
    if fmt == "hdf5":
        raise UsageError(f"{meta_path}: Minari's HDF5 data format; trl imports its arrow and parquet formats "
                         "(re-create it with data_format='parquet')")
    if fmt not in ("arrow", "parquet"):
        raise UsageError(f"{meta_path}: unknown Minari data format {fmt!r}; trl imports arrow and parquet")
    obs = _space(meta["observation_space"], _BOX, "observation_space", meta_path)
    action = _space(meta["action_space"], _DISCRETE, "action_space", meta_path)
    spec, env_from = _env_of(meta, env, meta_path)
    _check_spaces(spec, obs, action, meta_path)
    restored = _restored(meta, spec, meta_path)
    if not meta["total_episodes"]:
        raise UsageError(f"{meta_path}: the Minari dataset holds no episodes to import")
    out = output_path(out, "--out")
    if out.exists() or out.is_symlink():
        raise UsageError(f"--out {out} already exists; an import makes a new dataset: choose another path")
    episodes = meta["total_episodes"]
    ends = {"terminated": 0, "truncated": 0, "unflagged": 0}  # unflagged: the recording stopped mid-game
    source = {"kind": "minari", "dataset_id": meta["dataset_id"], "minari_version": meta["minari_version"],
              "data_format": fmt, "env_from": env_from, "resimulable": False, "ends": ends,
              "imported": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if restored is not None:
        manifest, env_index = restored
        seed, segments = manifest["seed"], manifest["segments"]
        source["resimulable"] = not any(s.get("imported") for s in segments)
    else:
        env_index = np.zeros(episodes, np.int32)  # one stream, marked imported: nothing to replay
        seed, segments = 0, [{"env_index_offset": 0, "seed": 0, "num_envs": 1, "batch_size": 1,
                              "env_steps": meta["total_steps"], "imported": True,
                              "producer": {"policy": "minari", "dataset_id": meta["dataset_id"]},
                              "started": source["imported"]}]
    writer = open_for_append(out, spec, seed=seed, num_envs=1, batch_size=1, producer={}, shard_rows=shard_rows,
                             append=False, segments=segments, source=source)
    steps = 0
    with removed_on_failure(out, writer.created), writer:
        for e in range(episodes):
            arrays, end = _episode(folder, fmt, spec, e)
            ends[end] += 1
            t = len(arrays["action"])
            steps += t
            writer.add(EpisodeBatch(
                obs=arrays["obs"][:t], action=arrays["action"].astype(np.int32), reward=arrays["reward"],
                logp=None, value=None, lengths=np.array([t]), env_index=env_index[e : e + 1],
                terminated=np.array([end == "terminated"]), truncated=np.array([end != "terminated"]),
                final_obs=arrays["obs"][t:]))
        if steps != meta["total_steps"]:
            raise DamagedData(f"{meta_path}: total_steps is {meta['total_steps']}, its episodes hold {steps}: "
                              "a damaged Minari dataset")
    return {"path": str(out), "dataset_id": meta["dataset_id"], "episodes": episodes, "steps": steps,
            "env_id": spec.env_id, "resimulable": source["resimulable"], "ends": ends}
