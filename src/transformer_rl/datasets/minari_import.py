"""A local Minari dataset (Parquet or Arrow data format) of an env trl knows, imported as a trl
dataset (the layout: minari.py). A trl export imports back re-simulable; episodes from anywhere
else are marked imported, which `trl datasets verify` says it cannot re-simulate.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds

from transformer_rl.datasets.batch import EpisodeBatch
from transformer_rl.datasets.format import FORMAT_VERSION, manifest_problem
from transformer_rl.datasets.minari import minari_root
from transformer_rl.datasets.reader import _fixed_list_to_numpy
from transformer_rl.datasets.writer import open_for_append
from transformer_rl.envs import RAM_SUFFIX, EnvSpec, known_ids, resolve
from transformer_rl.errors import DamagedData, UsageError
from transformer_rl.files import output_path, read_json, removed_on_failure
from transformer_rl.schema import AnyJSON, Bool, Const, Int, List, Obj, Opt, Str, problem

SHARD_ROWS = 100_000  # rows per shard of an imported dataset (as `trl collect`)
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
