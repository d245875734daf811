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
from transformer_rl.datasets.writer import EpisodeBatch, open_for_append
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
    episodes_per_env: int | None = None  # or once every env has finished this many (unbiased eval)

    def validate(self) -> None:
        if sum(x is not None for x in (self.steps, self.episodes, self.episodes_per_env)) != 1:
            raise UsageError("give exactly one of --steps or --episodes")
        for name in ("steps", "episodes", "num_envs", "batch_size", "shard_rows", "episodes_per_env"):
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


class StepLog:
    """Every entry EnvPool returns, in arrival order, with the action sent back for it.

    Appending a batch is a few slice copies, so the per-step cost stays tiny; ``cut`` then
    turns all finished episodes into rows at once with numpy and keeps only the entries of
    unfinished episodes. Entry k of an env pairs with its next entry k' to form a transition
    (obs[k], action[k], reward[k'], terminated[k'], truncated[k']) when elapsed[k'] > 0.
    """

    def __init__(self, obs_dim: int, obs_dtype: str, capacity: int = 1 << 16):
        self.size = 0
        self.env = np.zeros(capacity, np.int32)
        self.obs = np.zeros((capacity, obs_dim), obs_dtype)
        self.reward = np.zeros(capacity, np.float32)
        self.terminated = np.zeros(capacity, bool)
        self.truncated = np.zeros(capacity, bool)
        self.elapsed = np.zeros(capacity, np.int32)
        self.action = np.zeros(capacity, np.int32)
        self.logp = np.zeros(capacity, np.float32)
        self.value = np.zeros(capacity, np.float32)
        self.has_logp = False

    _columns = ("env", "obs", "reward", "terminated", "truncated", "elapsed", "action", "logp", "value")

    def add(self, ids, obs, reward, terminated, truncated, elapsed) -> slice:
        n = len(ids)
        if self.size + n > len(self.env):
            for name in self._columns:
                old = getattr(self, name)
                new = np.zeros((2 * len(old) + n, *old.shape[1:]), old.dtype)
                new[: self.size] = old[: self.size]
                setattr(self, name, new)
        at = slice(self.size, self.size + n)
        self.env[at], self.obs[at], self.reward[at] = ids, obs, reward
        self.terminated[at], self.truncated[at], self.elapsed[at] = terminated, truncated, elapsed
        self.size += n
        return at

    def acted(self, at: slice, action, logp=None, value=None) -> None:
        self.action[at] = action
        if logp is not None:
            self.has_logp = True
            self.logp[at], self.value[at] = logp, value

    def cut(self, max_episodes: int | None = None, quota: np.ndarray | None = None) -> EpisodeBatch:
        """Finished episodes in the order they finished: at most ``max_episodes``, and at
        most ``quota[i]`` from env i (the quota is decremented)."""
        n = self.size
        order = np.argsort(self.env[:n], kind="stable")  # per env, entries in time order
        env, elapsed = self.env[order], self.elapsed[order]
        episode = np.cumsum(elapsed == 0) - 1  # each env's entries start with a reset entry
        pair = np.zeros(n, bool)  # entry k and k+1 form a transition
        pair[:-1] = (env[1:] == env[:-1]) & (elapsed[1:] > 0)
        ended = np.zeros(n, bool)
        nxt = order[1:]
        ended[:-1] = pair[:-1] & (self.terminated[nxt] | self.truncated[nxt])
        end_pos = np.flatnonzero(ended)  # grouped by env, in time order within each
        if quota is not None:
            end_env = env[end_pos]
            ordinal = np.arange(len(end_pos)) - np.searchsorted(end_env, end_env)
            end_pos = end_pos[ordinal < quota[end_env]]
            quota -= np.bincount(env[end_pos], minlength=len(quota))
        end_pos = end_pos[np.argsort(order[end_pos + 1], kind="stable")]  # finishing order
        if max_episodes is not None:
            end_pos = end_pos[:max_episodes]
        rank = np.full(episode[-1] + 1 if n else 0, -1, np.int64)
        rank[episode[end_pos]] = np.arange(len(end_pos))
        rows = np.flatnonzero(pair & (rank[episode] >= 0))
        rows = rows[np.argsort(rank[episode[rows]], kind="stable")]
        src, dst = order[rows], order[rows + 1]
        last = order[end_pos + 1]
        term = self.terminated[last]
        batch = EpisodeBatch(
            obs=self.obs[src],
            action=self.action[src],
            reward=self.reward[dst],
            logp=self.logp[src] if self.has_logp else None,
            value=self.value[src] if self.has_logp else None,
            lengths=np.bincount(rank[episode[rows]], minlength=len(end_pos)).astype(np.int64),
            env_index=env[end_pos].astype(np.int32),
            terminated=term,
            truncated=self.truncated[last] & ~term,
            final_obs=self.obs[last],
        )
        finished = np.zeros(len(rank) + 1, bool)
        finished[episode[np.flatnonzero(ended)]] = True
        keep = np.sort(order[~finished[episode]]) if n else order
        for name in self._columns:
            column = getattr(self, name)
            column[: len(keep)] = column[keep]
        self.size = len(keep)
        return batch


ProgressFn = Callable[[CollectStats], None]


def collect(
    spec: EnvSpec,
    out: Path,
    policy: Policy,
    cfg: CollectConfig,
    *,
    append: bool = False,
    progress: ProgressFn | None = None,
    cut_entries: int = 1 << 16,
    cut_every_s: float = 0.5,
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
    log = StepLog(spec.obs_dim, spec.obs_dtype, capacity=max(1 << 16, 4 * cfg.num_envs))
    offset = segment["env_index_offset"]
    sync = batch_size == cfg.num_envs
    done_rows = done_episodes = 0  # counted as episodes end, before they are cut
    carried = 0  # log entries kept by the last cut
    start = last_cut = time.perf_counter()

    quota = None
    if cfg.episodes_per_env is not None:
        quota = np.full(cfg.num_envs, cfg.episodes_per_env, np.int64)
        ended_per_env = np.zeros(cfg.num_envs, np.int64)

    def cut(max_episodes: int | None = None) -> None:
        batch = log.cut(max_episodes, quota)
        batch.env_index += offset
        writer.add(batch)
        stats.rows += batch.rows
        stats.episodes += batch.episodes
        stats.returns.extend(batch.returns().tolist())
        stats.lengths.extend(batch.lengths.tolist())
        segment["env_steps"] = stats.env_steps
        stats.wall_s = time.perf_counter() - start
        if progress is not None:
            progress(stats)

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
            at = log.add(ids, obs, reward, terminated, truncated, elapsed)
            stats.env_steps += len(ids) - int(np.count_nonzero(elapsed == 0))
            ends = (terminated | truncated) & (elapsed > 0)
            if ends.any():
                done_episodes += int(np.count_nonzero(ends))
                done_rows += int(elapsed[ends].sum())  # an episode's length is its last elapsed_step
                if quota is not None:
                    ended_per_env[ids[ends]] += 1
                    if (ended_per_env >= cfg.episodes_per_env).all():
                        cut()
                        break
            if want_episodes is not None and done_episodes >= want_episodes:
                cut(max_episodes=want_episodes - stats.episodes)
                break
            if want_rows is not None and done_rows >= want_rows:
                cut()
                break
            action, logp, value = policy.act(obs, ids, elapsed == 0)
            log.acted(at, action, logp, value)
            if sync:
                obs, reward, terminated, truncated, info = pool.step(action)
            else:
                pool.send(action, ids)
            # cut when enough new entries arrived (unfinished episodes stay in the log); near a
            # shard's end, cut once the rows it still needs could be there, so shards hold about
            # shard_rows rows (not up to twice that)
            need = max(cfg.shard_rows - writer.buffered_rows, cfg.num_envs)
            if log.size >= carried + min(cut_entries, need) or time.perf_counter() - last_cut > cut_every_s:
                cut()
                carried, last_cut = log.size, time.perf_counter()
    stats.wall_s = time.perf_counter() - start
    stats.dataset_rows, stats.dataset_episodes = writer.rows, writer.episodes
    if progress is not None:
        progress(stats)
    return stats
