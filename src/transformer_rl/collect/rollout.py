"""The rollout loop: EnvPool plays, finished episodes go to the dataset writer.

EnvPool autoresets a finished env on its *next* step: that step ignores the action and returns
the new episode's first observation with ``elapsed_step == 0``. It is not a transition, so the
recorder only writes a row when the returned ``elapsed_step`` is positive.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from transformer_rl.collect.policies import Policy
from transformer_rl.datasets.writer import Episode, open_for_append
from transformer_rl.envs import EnvSpec, make_pool, observe
from transformer_rl.errors import UsageError


@dataclass
class CollectConfig:
    steps: int | None = None  # stop once this many transitions are recorded (whole episodes)
    episodes: int | None = None  # or once this many episodes are recorded
    num_envs: int = 8
    batch_size: int | None = None  # < num_envs: async EnvPool (send/recv)
    seed: int = 0
    shard_rows: int = 100_000  # rows per Parquet shard

    def validate(self) -> None:
        if (self.steps is None) == (self.episodes is None):
            raise UsageError("give exactly one of --steps or --episodes")
        for name in ("steps", "episodes", "num_envs", "batch_size", "shard_rows"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise UsageError(f"--{name.replace('_', '-')} must be positive, got {value}")
        if self.batch_size is not None and self.batch_size > self.num_envs:
            raise UsageError(f"--batch-size {self.batch_size} exceeds --num-envs {self.num_envs}")
        if not 0 <= self.seed < 2**31 - 1_000_000:
            raise UsageError("--seed must be a non-negative 31-bit integer")


@dataclass
class CollectStats:
    rows: int = 0  # transitions recorded by this call
    episodes: int = 0
    env_steps: int = 0  # transitions taken, including unfinished episodes dropped at the end
    wall_s: float = 0.0
    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    dataset_rows: int = 0  # totals of the dataset after this call
    dataset_episodes: int = 0

    @property
    def steps_per_s(self) -> float:
        return self.env_steps / max(self.wall_s, 1e-9)


class EpisodeRecorder:
    """Per-env buffers that grow transition by transition and hand out finished episodes."""

    def __init__(self, num_envs: int, obs_dim: int, obs_dtype: str, capacity: int = 1024):
        self.n, self.dim, self.dtype = num_envs, obs_dim, np.dtype(obs_dtype)
        self.obs = np.zeros((num_envs, capacity, obs_dim), self.dtype)
        self.action = np.zeros((num_envs, capacity), np.int32)
        self.reward = np.zeros((num_envs, capacity), np.float32)
        self.logp = np.zeros((num_envs, capacity), np.float32)
        self.value = np.zeros((num_envs, capacity), np.float32)
        self.length = np.zeros(num_envs, np.int64)
        self.last_obs = np.zeros((num_envs, obs_dim), self.dtype)  # before the pending action
        self.last_action = np.zeros(num_envs, np.int32)
        self.last_logp = np.zeros(num_envs, np.float32)
        self.last_value = np.zeros(num_envs, np.float32)
        self.has_logp = False

    def _grow(self) -> None:
        def bigger(a: np.ndarray) -> np.ndarray:
            out = np.zeros((a.shape[0], a.shape[1] * 2, *a.shape[2:]), a.dtype)
            out[:, : a.shape[1]] = a
            return out

        self.obs, self.action, self.reward, self.logp, self.value = map(
            bigger, (self.obs, self.action, self.reward, self.logp, self.value)
        )

    def record(self, ids, obs, reward, terminated, truncated, elapsed) -> list[Episode]:
        """Take one batch from EnvPool; return the episodes it finished."""
        moved = elapsed > 0
        if not moved.all():
            ids_m = ids[moved]
            reward, terminated, truncated = reward[moved], terminated[moved], truncated[moved]
            next_obs = obs[moved]
        else:
            ids_m, next_obs = ids, obs
        finished: list[Episode] = []
        if len(ids_m):
            pos = self.length[ids_m]
            if pos.max() >= self.action.shape[1]:
                self._grow()
            self.obs[ids_m, pos] = self.last_obs[ids_m]
            self.action[ids_m, pos] = self.last_action[ids_m]
            self.reward[ids_m, pos] = reward
            if self.has_logp:
                self.logp[ids_m, pos] = self.last_logp[ids_m]
                self.value[ids_m, pos] = self.last_value[ids_m]
            self.length[ids_m] = pos + 1
            done = np.flatnonzero(terminated | truncated)
            for j in done:
                i, t = int(ids_m[j]), int(pos[j]) + 1
                finished.append(
                    Episode(
                        env_index=i,
                        obs=self.obs[i, :t].copy(),
                        action=self.action[i, :t].copy(),
                        reward=self.reward[i, :t].copy(),
                        final_obs=next_obs[j].copy(),
                        terminated=bool(terminated[j]),
                        truncated=bool(truncated[j]) and not bool(terminated[j]),
                        logp=self.logp[i, :t].copy() if self.has_logp else None,
                        value=self.value[i, :t].copy() if self.has_logp else None,
                    )
                )
                self.length[i] = 0
        self.last_obs[ids] = obs
        return finished

    def acted(self, ids, action, logp=None, value=None) -> None:
        self.last_action[ids] = action
        if logp is not None:
            self.has_logp = True
            self.last_logp[ids] = logp
            self.last_value[ids] = value


ProgressFn = Callable[[CollectStats], None]


def collect(
    spec: EnvSpec,
    out: Path,
    policy: Policy,
    cfg: CollectConfig,
    *,
    append: bool = False,
    progress: ProgressFn | None = None,
    progress_every_s: float = 0.25,
) -> CollectStats:
    """Play ``policy`` in EnvPool and append whole episodes to the dataset at ``out``.

    With ``append`` the targets count what the dataset already holds (that is ``--resume``);
    new streams continue after the dataset's last env index.
    """
    cfg.validate()
    batch_size = cfg.batch_size or cfg.num_envs
    writer = open_for_append(
        Path(out),
        spec,
        seed=cfg.seed,
        num_envs=cfg.num_envs,
        batch_size=batch_size,
        producer=policy.describe(),
        shard_rows=cfg.shard_rows,
        append=append,
    )
    segment = writer.manifest["segments"][-1]
    stats = CollectStats(dataset_rows=writer.rows, dataset_episodes=writer.episodes)
    want_rows = None if cfg.steps is None else cfg.steps - writer.rows
    want_episodes = None if cfg.episodes is None else cfg.episodes - writer.episodes
    if (want_rows is not None and want_rows <= 0) or (want_episodes is not None and want_episodes <= 0):
        writer.close()
        return stats

    pool = make_pool(spec, cfg.num_envs, segment["seed"], batch_size)
    recorder = EpisodeRecorder(cfg.num_envs, spec.obs_dim, spec.obs_dtype)
    offset = segment["env_index_offset"]
    sync = batch_size == cfg.num_envs
    start = last_report = time.perf_counter()
    if sync:
        obs, info = pool.reset()
        reward = np.zeros(cfg.num_envs, np.float32)
        terminated = truncated = np.zeros(cfg.num_envs, bool)
    else:
        pool.async_reset()
    with writer:
        while True:
            if not sync:
                obs, reward, terminated, truncated, info = pool.recv()
            ids, elapsed = info["env_id"], info["elapsed_step"]
            obs = observe(spec, obs, info)
            for episode in recorder.record(ids, obs, reward, terminated, truncated, elapsed):
                episode.env_index += offset
                writer.add(episode)
                stats.rows += len(episode)
                stats.episodes += 1
                stats.returns.append(float(episode.reward.sum()))
                stats.lengths.append(len(episode))
                if stats.episodes == want_episodes:
                    break
            stats.env_steps += int(np.count_nonzero(elapsed))
            if (want_rows is not None and stats.rows >= want_rows) or stats.episodes == want_episodes:
                break
            action, logp, value = policy.act(obs, ids, elapsed == 0)
            recorder.acted(ids, action, logp, value)
            if sync:
                obs, reward, terminated, truncated, info = pool.step(action)
            else:
                pool.send(action, ids)
            now = time.perf_counter()
            if now - last_report >= progress_every_s:
                last_report = now
                segment["env_steps"] = stats.env_steps
                stats.wall_s = now - start
                if progress is not None:
                    progress(stats)
        segment["env_steps"] = stats.env_steps
    stats.wall_s = time.perf_counter() - start
    stats.dataset_rows, stats.dataset_episodes = writer.rows, writer.episodes
    if progress is not None:
        progress(stats)
    return stats
