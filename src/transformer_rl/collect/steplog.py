"""The collector's log of every entry EnvPool returned, cut into finished episodes in bulk."""

from __future__ import annotations

import numpy as np

from transformer_rl.datasets.batch import EpisodeBatch


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
        # episode e's rows are the sorted positions from its first entry (its reset) to end_pos
        first = np.searchsorted(episode, episode[end_pos])  # `episode` never decreases
        lengths = end_pos - first + 1
        starts_out = np.cumsum(lengths) - lengths
        rows = np.arange(int(lengths.sum())) + np.repeat(first - starts_out, lengths)
        src, dst = order[rows], order[rows + 1]
        last = order[end_pos + 1]
        term = self.terminated[last]
        batch = EpisodeBatch(
            obs=self.obs[src],
            action=self.action[src],
            reward=self.reward[dst],
            logp=self.logp[src] if self.has_logp else None,
            value=self.value[src] if self.has_logp else None,
            lengths=lengths.astype(np.int64),
            env_index=env[end_pos].astype(np.int32),
            terminated=term,
            truncated=self.truncated[last] & ~term,
            final_obs=self.obs[last],
        )
        finished = np.zeros(episode[-1] + 2 if n else 1, bool)
        finished[episode[np.flatnonzero(ended)]] = True
        keep = np.sort(order[~finished[episode]]) if n else order
        for name in self._columns:
            column = getattr(self, name)
            column[: len(keep)] = column[keep]
        self.size = len(keep)
        return batch
