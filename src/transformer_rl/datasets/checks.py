"""`validate`: the dataset's structure. `verify`: every episode re-simulated bit for bit.

Both return a list of problems, each naming the shard and episode; an empty list is a pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from transformer_rl.datasets.format import arrow_schema, read_manifest, shard_problem
from transformer_rl.datasets.reader import Transitions, load
from transformer_rl.envs import EnvSpec, make_pool, observe


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    rows: int = 0
    episodes: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def validate(root: Path, max_problems: int = 20) -> Report:
    root = Path(root)
    manifest = read_manifest(root)
    report = Report()
    problems = report.problems
    obs = manifest["observation"]
    schema = arrow_schema(int(np.prod(obs["shape"])), obs["dtype"], manifest["env_id"])
    n_actions = manifest["action"]["n"]
    n_streams = sum(s["num_envs"] for s in manifest["segments"])
    next_id = 0
    for shard in manifest["shards"]:
        name, path = shard["file"], root / shard["file"]
        first_id, next_id = next_id, next_id + shard["episodes"]  # even if this shard is bad
        problem = shard_problem(path, shard)
        if problem:
            problems.append(f"{name}: {problem}")
            continue
        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as e:
            problems.append(f"{name}: unreadable Parquet ({e})")
            continue
        if not table.schema.equals(schema, check_metadata=False):
            problems.append(f"{name}: schema differs from the format's schema")
            continue
        if table.num_rows != shard["rows"]:
            problems.append(f"{name}: {table.num_rows} rows, manifest says {shard['rows']}")
        problems.extend(_check_rows(name, table, first_id, shard, n_actions, n_streams))
        report.rows += table.num_rows
        report.episodes += shard["episodes"]
        if len(problems) >= max_problems:
            break
    return report


def _check_rows(name, table, first_id, shard, n_actions, n_streams) -> list[str]:
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


def verify(root: Path, max_problems: int = 20) -> Report:
    """Re-simulate every recorded episode from the manifest's seed, config and actions.

    Each segment's pool is rebuilt with the segment's seed and num_envs and stepped in lockstep
    (sync, whatever batching collected it): env i replays its recorded episodes in order, and
    every observation, reward and end flag must match the recording bit for bit.
    """
    root = Path(root)
    report = validate(root)
    if not report.ok:
        return report
    data = load(root)
    manifest = data.manifest
    spec = EnvSpec.from_json(manifest["env"])
    for segment in manifest["segments"]:
        report.problems.extend(_verify_segment(data, spec, segment, manifest, max_problems))
        if len(report.problems) >= max_problems:
            break
    return report


def _shard_of(manifest: dict[str, Any], episode_id: int) -> str:
    for shard in manifest["shards"]:
        if shard["first_episode_id"] <= episode_id < shard["first_episode_id"] + shard["episodes"]:
            return shard["file"]
    return "?"


def _verify_segment(data: Transitions, spec: EnvSpec, segment, manifest, max_problems) -> list[str]:
    n, offset = segment["num_envs"], segment["env_index_offset"]
    first_rows = data.episode_rows[:-1]
    episode_env = data.env_index[first_rows] - offset
    mine = np.flatnonzero((episode_env >= 0) & (episode_env < n))
    if len(mine) == 0:
        return []
    # Per env, its stream of entries: a reset observation, then one entry per step.
    # obs_stream[i, k] is what the env must return at entry k; act_stream[i, k] the action
    # sent after it (0 on the last entry of an episode: the autoreset step ignores it).
    streams: list[list[int]] = [[] for _ in range(n)]
    for e in mine:
        streams[episode_env[e]].append(int(e))
    lens = [sum(int(data.episode_rows[e + 1] - data.episode_rows[e]) + 1 for e in s) for s in streams]
    width = max(lens)
    D = data.obs.shape[1]
    obs_stream = np.zeros((n, width, D), data.obs.dtype)
    act_stream = np.zeros((n, width), np.int32)
    rew_stream = np.zeros((n, width), np.float32)
    term_stream = np.zeros((n, width), bool)
    trunc_stream = np.zeros((n, width), bool)
    episode_at = np.full((n, width), -1, np.int64)
    for i, episodes in enumerate(streams):
        k = 0
        for e in episodes:
            a, b = int(data.episode_rows[e]), int(data.episode_rows[e + 1])
            t = b - a
            obs_stream[i, k : k + t] = data.obs[a:b]
            obs_stream[i, k + t] = data.final_obs[e]
            act_stream[i, k : k + t] = data.action[a:b]
            rew_stream[i, k + 1 : k + t + 1] = data.reward[a:b]
            term_stream[i, k + t] = data.terminated[b - 1]
            trunc_stream[i, k + t] = data.truncated[b - 1]
            episode_at[i, k : k + t + 1] = data.episode_id[a]
            k += t + 1
    lens_arr = np.array(lens)
    pool = make_pool(spec, n, segment["seed"])
    obs, info = pool.reset()
    got = observe(spec, obs, info)
    problems: list[str] = []
    failed = np.zeros(n, bool)

    def compare(k: int, got: np.ndarray, reward, term, trunc) -> None:
        live = (k < lens_arr) & ~failed
        if not live.any():
            return
        exp = obs_stream[:, min(k, width - 1)]
        same_obs = (got.view(np.uint8).reshape(n, -1) == exp.view(np.uint8).reshape(n, -1)).all(1)
        checks = same_obs
        if k > 0:
            kk = min(k, width - 1)
            step_entry = episode_at[:, kk] == episode_at[:, kk - 1]  # not a reset entry
            same_step = (
                (reward.astype(np.float32).view(np.uint32) == rew_stream[:, kk].view(np.uint32))
                & (term.astype(bool) == term_stream[:, kk])
                & (trunc.astype(bool) | term.astype(bool)) == (trunc_stream[:, kk] | term_stream[:, kk])
            )
            checks = same_obs & (same_step | ~step_entry)
        for i in np.flatnonzero(live & ~checks):
            failed[i] = True
            ep = int(episode_at[i, k])
            what = "observation" if not same_obs[i] else "reward or end flag"
            step = k - int(np.flatnonzero(episode_at[i] == ep)[0])
            problems.append(
                f"{_shard_of(manifest, ep)} episode {ep}: {what} differs from re-simulation "
                f"at step {step} (env_index {offset + i})"
            )

    compare(0, got, None, None, None)
    for k in range(width - 1):
        if failed.all() or len(problems) >= max_problems:
            break
        obs, reward, term, trunc, info = pool.step(act_stream[:, k])
        compare(k + 1, observe(spec, obs, info), reward, term, trunc)
    return problems
