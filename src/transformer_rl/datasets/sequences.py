"""Episodes as model inputs: each episode's rows followed by its final observation.

Training windows run over this "step sequence" (M = N rows + E final observations), so a window
can end on an episode's final observation and a target can bootstrap from it, whether the
episode was truncated or is merely the end of a rollout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from transformer_rl.datasets.reader import Transitions


@dataclass
class Sequences:
    obs: np.ndarray  # (M, D)
    prev_action: np.ndarray  # (M,) int64 in [0, A]; A = "no previous action" (episode start)
    row: np.ndarray  # (M,) int64 row of the dataset at this step, -1 on final observations
    start: np.ndarray  # (M,) int64 step index where this step's episode starts
    stop: np.ndarray  # (M,) int64 step index of this step's episode's final observation
    step_of_row: np.ndarray  # (N,) int64 position of each row in the step sequence

    def __len__(self) -> int:
        return len(self.row)

    def windows(self, ends: np.ndarray, context: int) -> tuple[np.ndarray, np.ndarray]:
        """Index (B, K) of the K steps ending at ``ends`` and mask (B, K), False on left padding."""
        index = ends[:, None] + np.arange(-context + 1, 1)[None, :]
        start = self.start[ends][:, None]
        mask = index >= start
        return np.where(mask, index, start), mask


def build_sequences(data: Transitions, num_actions: int) -> Sequences:
    n, e = len(data), data.num_episodes
    lengths = np.diff(data.episode_rows)
    episode_of_row = np.repeat(np.arange(e), lengths)
    step_of_row = np.arange(n) + episode_of_row
    final_step = data.episode_rows[1:] + np.arange(e)  # (E,)
    m = n + e
    obs = np.empty((m, data.obs.shape[1]), data.obs.dtype)
    obs[step_of_row] = data.obs
    obs[final_step] = data.final_obs
    row = np.full(m, -1, np.int64)
    row[step_of_row] = np.arange(n)
    action_at = np.full(m, num_actions, np.int64)  # action taken at each step
    action_at[step_of_row] = data.action
    prev_action = np.full(m, num_actions, np.int64)
    prev_action[1:] = action_at[:-1]
    first_step = final_step - lengths  # (E,)
    prev_action[first_step] = num_actions
    start = np.repeat(first_step, lengths + 1)
    stop = np.repeat(final_step, lengths + 1)
    return Sequences(obs, prev_action, row, start, stop, step_of_row)

