"""A sync pool's steps during one `Collector.play`, and their on-policy training rows.

Per env, entry t and t+1 form a transition when entry t+1 is not an autoreset (EnvPool resets
a finished env on the next step, which returns ``elapsed_step == 0`` and is no transition).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from transformer_rl.datasets.reader import Transitions


@dataclass
class Trace:
    """Every step of a sync pool during one ``Collector.play``, time-major: T entries x N envs.

    Entry t holds what EnvPool returned (obs, and the reward / end flags / elapsed_step of the
    step that led to it) and the action the policy then took. The first ``prefix`` entries were
    acted on in earlier calls (context for sequence models); the last entry is not acted on yet.
    """

    obs: np.ndarray  # (T, N, D)
    reward: np.ndarray  # (T, N)
    terminated: np.ndarray  # (T, N)
    truncated: np.ndarray  # (T, N)
    elapsed: np.ndarray  # (T, N)
    action: np.ndarray  # (T, N), meaningless on the last entry
    logp: np.ndarray  # (T, N)
    prefix: int
    lives: np.ndarray | None = None  # (T, N) lives left (Atari), else None


def rollout_transitions(trace: Trace) -> Transitions:
    """A rollout as Transitions of episode fragments, with ``learn`` (the rows acted on in this
    rollout) and ``life_lost`` (Atari; all False otherwise).

    Per env, entry t and t+1 form a transition when entry t+1 is not an autoreset. A fragment
    (a run of transitions) ends where its episode ends (final_obs = the final observation) or
    where the rollout ends (final_obs = the observation not acted on yet; never terminated, so
    GAE bootstraps from it). Rows acted on in earlier rollouts are context, not learned from.
    """
    t_len, n_envs = trace.elapsed.shape
    parts = []
    for env in range(n_envs):
        src = np.flatnonzero(trace.elapsed[1:, env] > 0)  # entry -> next entry is a transition
        if not len(src):
            continue
        new_fragment = np.ones(len(src), bool)
        new_fragment[1:] = np.diff(src) != 1
        starts = np.flatnonzero(new_fragment)
        lengths = np.diff(np.append(starts, len(src)))
        last = src[starts + lengths - 1] + 1  # the entry after each fragment's last row
        parts.append((env, src, lengths, last))
    src_t = np.concatenate([p[1] for p in parts])
    src_env = np.concatenate([np.full(len(p[1]), p[0]) for p in parts])
    lengths = np.concatenate([p[2] for p in parts])
    last_t = np.concatenate([p[3] for p in parts])
    last_env = np.concatenate([np.full(len(p[2]), p[0]) for p in parts])
    keep = last_t - 1 >= trace.prefix  # fragments with at least one row acted on in this rollout
    row_keep = np.repeat(keep, lengths)
    src_t, src_env, lengths = src_t[row_keep], src_env[row_keep], lengths[keep]
    last_t, last_env = last_t[keep], last_env[keep]
    episode_rows = np.concatenate([[0], np.cumsum(lengths)])
    n = len(src_t)
    is_last = np.zeros(n, bool)
    is_last[episode_rows[1:] - 1] = True
    terminated = np.zeros(n, bool)
    terminated[is_last] = trace.terminated[last_t, last_env]
    data = Transitions(
        obs=trace.obs[src_t, src_env],
        action=trace.action[src_t, src_env].astype(np.int64),
        reward=trace.reward[src_t + 1, src_env],
        terminated=terminated,
        truncated=is_last & ~terminated,  # by the time limit or by the rollout's end: bootstrap
        episode_id=np.repeat(np.arange(len(lengths)), lengths),
        env_index=src_env.astype(np.int32),
        step=trace.elapsed[src_t, src_env].astype(np.int32),
        logp=trace.logp[src_t, src_env],
        value=np.full(n, np.nan, np.float32),
        final_obs=trace.obs[last_t, last_env],
        episode_rows=episode_rows,
        learn=src_t >= trace.prefix,
        life_lost=np.zeros(n, bool),
    )
    if trace.lives is not None:
        data.life_lost = trace.lives[src_t + 1, src_env] < trace.lives[src_t, src_env]
    return data
