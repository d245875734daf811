"""`validate`: the dataset's structure. `verify`: every check of validate, then every episode
re-simulated: each row's observation, reward, end flags and final observation must be what
EnvPool returns for the recorded actions, bit for bit. Episodes imported from elsewhere (Minari)
were not played from trl's seeded env streams: verify says so, a failed check, since there is
nothing to replay them against.

Both return a list of problems, each naming the shard and episode; an empty list is a pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from transformer_rl.datasets.format import read_manifest
from transformer_rl.datasets.reader import Transitions, load
from transformer_rl.datasets.shards import shard_problem, table_problems
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
    for shard in manifest["shards"]:
        name, path = shard["file"], root / shard["file"]
        problem = shard_problem(path, shard)
        if problem:
            problems.append(f"{name}: {problem}")
            continue
        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as e:
            problems.append(f"{name}: unreadable Parquet ({' '.join(str(e).split())})")
            continue
        problems.extend(f"{name}{p}" for p in table_problems(table, shard, manifest))
        report.rows += table.num_rows
        report.episodes += shard["episodes"]
        if len(problems) >= max_problems:
            break
    return report


def verify(root: Path, max_problems: int = 20, progress: Callable[[int, int], None] | None = None) -> Report:
    """Re-simulate every recorded episode from the manifest's seed, config and actions.

    Each segment's pool is rebuilt with the segment's seed and num_envs and stepped in lockstep
    (sync, whatever batching collected it): env i replays its recorded episodes in order, and
    every observation, reward and end flag must match the recording bit for bit.
    ``progress(done, total)``: the observations compared so far, of all (rows + resets).
    """
    root = Path(root)
    report = validate(root)
    if not report.ok:
        return report
    data = load(root)
    manifest = data.manifest
    spec = EnvSpec.from_json(manifest["env"])
    total, done = len(data) + len(data.episode_rows) - 1, 0
    for i, segment in enumerate(manifest["segments"]):
        if segment.get("imported"):
            source = manifest.get("source", {}).get("dataset_id", "another format")
            report.problems.append(
                f"{root}: segment {i} holds episodes imported from Minari dataset {source}, which were not "
                "played from trl's seeded env streams: they cannot be re-simulated (their structure is "
                f"checked by `trl datasets validate {root}`)")
            continue
        report.problems.extend(_verify_segment(
            data, spec, segment, manifest, max_problems,
            None if progress is None else lambda entries, base=done: progress(base + entries, total)))
        done += _entries(data, segment)
        if len(report.problems) >= max_problems:
            break
    return report


def _shard_of(manifest: dict[str, Any], episode_id: int) -> str:
    for shard in manifest["shards"]:
        if shard["first_episode_id"] <= episode_id < shard["first_episode_id"] + shard["episodes"]:
            return shard["file"]
    return "?"


def _segment_episodes(data: Transitions, segment) -> tuple[np.ndarray, np.ndarray]:
    """The episodes a segment's envs played, and each one's env within the segment."""
    n, offset = segment["num_envs"], segment["env_index_offset"]
    episode_env = data.env_index[data.episode_rows[:-1]] - offset
    return np.flatnonzero((episode_env >= 0) & (episode_env < n)), episode_env


def _entries(data: Transitions, segment) -> int:
    """Observations a segment's re-simulation compares: each episode's rows and its reset."""
    mine, _ = _segment_episodes(data, segment)
    return int((data.episode_rows[mine + 1] - data.episode_rows[mine]).sum()) + len(mine)


def _verify_segment(data: Transitions, spec: EnvSpec, segment, manifest, max_problems, progress) -> list[str]:
    n, offset = segment["num_envs"], segment["env_index_offset"]
    mine, episode_env = _segment_episodes(data, segment)
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
                & ((trunc.astype(bool) | term.astype(bool)) == (trunc_stream[:, kk] | term_stream[:, kk]))
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
        if progress is not None and (k % 64 == 0 or k == width - 2):
            progress(int(np.minimum(k + 2, lens_arr).sum()))
    return problems
