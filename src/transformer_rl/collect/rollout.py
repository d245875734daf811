"""The rollout loop: EnvPool plays, finished episodes go to the dataset writer (`collect/job.py`
runs one collection to a target with it).

EnvPool autoresets a finished env on its *next* step: that step ignores the action and returns
the new episode's first observation with ``elapsed_step == 0``. It is not a transition, so the
recorder only writes a row when the returned ``elapsed_step`` is positive.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from transformer_rl.collect.policies import Policy
from transformer_rl.collect.steplog import StepLog
from transformer_rl.collect.trace import Trace
from transformer_rl.distributed import pool_threads
from transformer_rl.envs import EnvSpec, make_pool, observe
from transformer_rl.errors import UsageError
from transformer_rl.settings import MAX_ENVS, POSITIVE, check_seed, check_value


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
        if sum(x is not None for x in (self.steps, self.episodes, self.episodes_per_env)) > 1:
            raise UsageError("give only one of --steps or --episodes")
        for name in ("steps", "episodes", "num_envs", "batch_size", "shard_rows", "episodes_per_env"):
            check_value(name, getattr(self, name), POSITIVE)
        if self.num_envs > MAX_ENVS:
            name = "--episodes" if self.episodes_per_env else "--num-envs"  # evaluation: one env each
            raise UsageError(f"{name} {self.num_envs} is out of range: give at most {MAX_ENVS} (envs in one pool)")
        if self.batch_size is not None and self.batch_size > self.num_envs:
            raise UsageError(f"--batch-size {self.batch_size} exceeds --num-envs {self.num_envs}")
        check_seed(self.seed, self.num_envs)


@dataclass
class CollectStats:
    rows: int = 0  # transitions recorded by this call
    episodes: int = 0
    env_steps: int = 0  # transitions taken, including unfinished episodes dropped at the end
    wall_s: float = 0.0
    startup_s: float = 0.0  # of wall_s, building the EnvPool pool (ALE: seconds for 32 envs)
    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    dataset_rows: int = 0  # totals of the dataset after this call
    dataset_episodes: int = 0

    @property
    def steps_per_s(self) -> float:
        """Steady-state throughput: env steps per second once the pool is built."""
        return self.env_steps / max(self.wall_s - self.startup_s, 1e-9)


ProgressFn = Callable[[CollectStats], None]


@dataclass
class Entries:
    """One batch EnvPool returned; ``at``: where it sits in the log, once logged."""

    obs: np.ndarray
    ids: np.ndarray
    first: np.ndarray  # autoreset entries (elapsed_step 0)
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    elapsed: np.ndarray
    ends: np.ndarray  # entries that end an episode
    lives: np.ndarray | None
    at: slice | None = None


class Collector:
    """An EnvPool pool and the dataset it feeds, kept alive across ``play`` calls.

    Episodes carry on from one call to the next, so PPO can train on fixed-length rollouts
    while the dataset still receives only whole episodes. `collect` (job.py) plays one to a target.
    """

    def __init__(self, spec: EnvSpec, cfg: CollectConfig, writer, *, progress: ProgressFn | None = None,
                 trace_context: int = 0, cut_entries: int = 1 << 16, cut_every_s: float = 0.5):
        self.spec, self.cfg, self.progress = spec, cfg, progress
        self.cut_entries, self.cut_every_s = cut_entries, cut_every_s
        self.batch_size = cfg.batch_size or cfg.num_envs
        self.sync_pool = self.batch_size == cfg.num_envs
        if trace_context and not self.sync_pool:
            raise ValueError("traces need a sync pool")
        self.writer = writer  # opened for this pool (datasets/ranks.py: `open_writer`)
        self.segment = self.writer.segment
        self.done = False  # the config's target is in the dataset
        self.stats = CollectStats(dataset_rows=self.writer.rows, dataset_episodes=self.writer.episodes)
        self.pool = None
        self.pool_threads = pool_threads()
        self.step_log = StepLog(spec.obs_dim, spec.obs_dtype, capacity=max(1 << 16, 4 * cfg.num_envs))
        self.trace_context = trace_context
        self.trace: list[dict[str, np.ndarray]] = []
        self.pending: Entries | None = None  # the newest entries, not acted on yet
        self.result = None  # sync: what pool.reset returned
        self.done_rows = self.done_episodes = 0  # counted as episodes end, before they are cut
        self.carried = 0  # log entries kept by the last cut
        self.running_return = np.zeros(cfg.num_envs, np.float64)
        self.finished_returns: list[float] = []  # every episode that ended, as it ended
        self.start = self.last_cut = time.perf_counter()
        self.quota = self.ended_per_env = None
        if cfg.episodes_per_env is not None:
            self.quota = np.full(cfg.num_envs, cfg.episodes_per_env, np.int64)
            self.ended_per_env = np.zeros(cfg.num_envs, np.int64)

    def _cut(self, max_episodes: int | None = None) -> None:
        batch = self.step_log.cut(max_episodes, self.quota)
        batch.env_index += self.segment["env_index_offset"]
        self.writer.add(batch)
        stats = self.stats
        stats.rows += batch.rows
        stats.episodes += batch.episodes
        stats.returns.extend(batch.returns().tolist())
        stats.lengths.extend(batch.lengths.tolist())
        self.segment["env_steps"] = stats.env_steps
        stats.wall_s = time.perf_counter() - self.start
        if self.progress is not None:
            self.progress(stats)
        self.carried, self.last_cut = self.step_log.size, time.perf_counter()

    def _receive(self) -> None:
        """Take EnvPool's next batch as ``pending``, counting what ``_reached`` needs; the rest
        of its bookkeeping (``_record``) waits until its actions are sent, while EnvPool steps."""
        if self.pool is None:
            t0 = time.perf_counter()
            self.pool = make_pool(self.spec, self.cfg.num_envs, self.segment["seed"], self.batch_size,
                                  self.pool_threads)
            if self.sync_pool:
                obs, info = self.pool.reset()
                n = self.cfg.num_envs
                self.result = (obs, np.zeros(n, np.float32), np.zeros(n, bool), np.zeros(n, bool), info)
            else:
                self.pool.async_reset()
            self.stats.startup_s += time.perf_counter() - t0
        result, self.result = self.result, None
        obs, reward, terminated, truncated, info = result or self.pool.recv()
        ids, elapsed = info["env_id"], info["elapsed_step"]
        first = elapsed == 0  # autoreset entries: not transitions, reward 0
        ends = (terminated | truncated) & ~first
        self.stats.env_steps += len(ids) - int(np.count_nonzero(first))
        if ends.any():
            self.done_episodes += int(np.count_nonzero(ends))
            self.done_rows += int(elapsed[ends].sum())  # an episode's length is its last elapsed_step
            if self.quota is not None:
                self.ended_per_env[ids[ends]] += 1
        self.pending = Entries(observe(self.spec, obs, info), ids, first, reward, terminated, truncated,
                               elapsed, ends, info.get("lives"))

    def _record(self, e: Entries, action=None, logp=None, value=None) -> None:
        """Add the pending entries (and the actions taken on them, when given) to the log and
        the trace, and close the returns of the episodes they end."""
        e.at = self.step_log.add(e.ids, e.obs, e.reward, e.terminated, e.truncated, e.elapsed)
        if action is not None:
            self.step_log.acted(e.at, action, logp, value)
        if self.trace_context:
            self.trace.append({"obs": e.obs.copy(), "reward": e.reward, "terminated": e.terminated,
                               "truncated": e.truncated, "elapsed": e.elapsed, "lives": e.lives})
            if action is not None:
                self._trace_action(action, logp)
        if self.sync_pool:  # ids are 0..N-1 in order
            self.running_return += e.reward
        else:
            self.running_return[e.ids] += e.reward
        if e.ends.any():
            ended = e.ids[e.ends]
            self.finished_returns.extend(self.running_return[ended].tolist())
            self.running_return[ended] = 0.0

    def _trace_action(self, action, logp) -> None:
        self.trace[-1]["action"] = action
        self.trace[-1]["logp"] = logp if logp is not None else np.full(len(action), np.nan, np.float32)

    def play(self, policy: Policy, *, env_steps: int | None = None, until: float | None = None) -> Trace | None:
        """Step until this call took ``env_steps`` transitions, or until the config's target
        (rows, episodes, episodes per env) is in the dataset (``done``), or, with ``until``,
        until that ``time.perf_counter()`` (the episodes finished so far are then cut).
        Returns the trace if kept."""
        cfg, stats = self.cfg, self.stats
        want_rows = None if cfg.steps is None else cfg.steps - self.stats.dataset_rows
        want_episodes = None if cfg.episodes is None else cfg.episodes - self.stats.dataset_episodes
        stop_at_steps = None if env_steps is None else stats.env_steps + env_steps
        if stop_at_steps is None and any(w is not None and w <= 0 for w in (want_rows, want_episodes)):
            return None  # the dataset already holds the target (a finished --resume)
        if self.trace_context:
            self.trace = self.trace[-self.trace_context:]
        prefix = max(len(self.trace) - 1, 0)
        while True:
            if self.pending is None:
                self._receive()
            if self._reached(stop_at_steps, want_rows, want_episodes, until):
                break
            e = self.pending
            action, logp, value = policy.act(e.obs, e.ids, e.first, e.reward)
            self.pool.send(action, None if self.sync_pool else e.ids)  # EnvPool steps them meanwhile
            if e.at is None:
                self._record(e, action, logp, value)
            else:  # logged when the previous play() ended on it
                self.step_log.acted(e.at, action, logp, value)
                if self.trace_context:
                    self._trace_action(action, logp)
            self.pending = None
            # cut when enough new entries arrived (unfinished episodes stay in the log); near a
            # shard's end, cut once the rows it still needs could be there, so shards hold about
            # shard_rows rows (not up to twice that)
            need = max(cfg.shard_rows - self.writer.buffered_rows, cfg.num_envs)
            if (self.step_log.size >= self.carried + min(self.cut_entries, need)
                    or time.perf_counter() - self.last_cut > self.cut_every_s):
                self._cut()
        stats.wall_s = time.perf_counter() - self.start
        if not self.trace_context:
            return None
        t = self.trace
        n = len(t[-1]["elapsed"])
        last = {"action": np.zeros(n, np.int32), "logp": np.full(n, np.nan, np.float32)}
        lives = np.stack([e["lives"] for e in t]) if t[0]["lives"] is not None else None
        return Trace(**{k: np.stack([e.get(k, last.get(k)) for e in t]) for k in
                        ("obs", "reward", "terminated", "truncated", "elapsed", "action", "logp")},
                     prefix=prefix, lives=lives)

    def _reached(self, stop_at_steps: int | None, want_rows: int | None, want_episodes: int | None,
                 until: float | None = None) -> bool:
        """Whether play() is done: its env steps taken, the dataset's target met (then the
        finished episodes that meet it are cut into the dataset), or its time is up."""
        if stop_at_steps is not None:
            if self.stats.env_steps < stop_at_steps:
                return False
            if self.pending.at is None:  # the next play() starts from these entries
                self._record(self.pending)
            return True
        cut: dict[str, int] = {}
        if self.quota is not None:
            done = bool((self.ended_per_env >= self.cfg.episodes_per_env).all())
        elif want_episodes is not None:
            done = self.done_episodes >= want_episodes
            cut["max_episodes"] = want_episodes - self.stats.episodes
        else:
            done = want_rows is None or self.done_rows >= want_rows
        timeout = not done and until is not None and time.perf_counter() >= until
        if done:
            if self.pending.at is None:  # the entries that end these episodes must be in the log
                self._record(self.pending)
            self._cut(**cut)
        elif timeout:  # the pending entries stay out of the log until they are acted on: a cut
            self._cut()  # moves the log's entries, and their actions must land on their rows
        self.done = done
        return done or timeout

    def flush(self) -> None:
        """Write the episodes cut so far as a shard now (the log is not cut here: the entries
        of the batch waiting for an action must stay where they are)."""
        self.writer.flush(wait=True)

    def close(self) -> CollectStats:
        """Flush finished episodes; unfinished ones are dropped (never half-written)."""
        try:
            self._cut()
            self.writer.close()
        finally:
            if self.pool is not None:
                self.pool.close()
                self.pool = None
        stats = self.stats
        stats.wall_s = time.perf_counter() - self.start
        stats.dataset_rows, stats.dataset_episodes = self.writer.rows, self.writer.episodes
        if self.progress is not None:
            self.progress(stats)
        return stats
