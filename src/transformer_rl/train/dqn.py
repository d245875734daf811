"""DQN over K-step windows (DTQN-style): Q at every position, trained against n-step
double-DQN targets from a target network, Huber loss, clipped gradients.

The online network sees a window of K steps and learns at every position. The bootstrap values
come from a second window, the first shifted n steps later (less at an episode's end), so each
bootstrap step is seen with a full history, as the acting policy sees it, and every position
of the first window, the last (the one that acts) included, gets a target.
Truncation bootstraps (from the episode's final observation); termination does not.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from transformer_rl.datasets.reader import Transitions
from transformer_rl.train.sequences import Sequences, build_sequences, to_tensor


@dataclass
class DQNConfig:
    updates: int = 1000  # gradient steps per `train_dqn` call
    batch_size: int = 64  # windows per gradient step
    lr: float = 5e-4  # Adam learning rate
    gamma: float = 0.99  # discount
    n_step: int = 3  # n-step returns
    target_every: int = 200  # gradient steps between target-network copies
    max_grad_norm: float = 10.0  # gradient clipping
    replay_rows: int = 100_000  # the replay: the dataset's newest shards holding this many rows
    huber_delta: float = 1.0

    def to_json(self) -> dict:
        return asdict(self)


def n_step_targets(
    reward: np.ndarray, terminated: np.ndarray, episode_rows: np.ndarray, gamma: float, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row i of an episode spanning rows [a, b): with s = min(n, b - i) steps,

    G_i = sum_{k<s} gamma^k r_{i+k},   bootstrap at step i + s with weight gamma^s,
    weight 0 when the episode terminated within those s steps (i + s == b and terminated).
    Returns (G, s, weight), each (N,).
    """
    n_rows = len(reward)
    end = np.repeat(episode_rows[1:], np.diff(episode_rows))  # (N,) one past each row's episode
    rows = np.arange(n_rows)
    steps = np.minimum(n, end - rows)
    ret = np.zeros(n_rows, np.float64)
    for k in range(n):
        inside = k < steps
        ret[inside] += gamma**k * reward[rows[inside] + k]
    terminated_at_end = terminated[end - 1] & (rows + steps == end)
    weight = np.where(terminated_at_end, 0.0, gamma ** steps.astype(np.float64))
    return ret.astype(np.float32), steps, weight.astype(np.float32)


def dqn_loss(model, target, batch: dict[str, torch.Tensor], huber_delta: float):
    """Huber loss between Q(s_j, a_j) and G_j + w_j * Q_target(s_{j+s}, argmax_a Q(s_{j+s}, a))."""
    q = model(batch["obs"], batch["prev_action"], batch["mask"]).q  # (B, K, A)
    with torch.no_grad():
        boot = batch["boot_pos"].unsqueeze(-1).expand(-1, -1, q.shape[-1])  # (B, K, A) in window 2
        next_inputs = (batch["next_obs"], batch["next_prev_action"], batch["next_mask"])
        best = model(*next_inputs).q.gather(1, boot).argmax(-1, keepdim=True)  # double DQN
        q_next = target(*next_inputs).q.gather(1, boot).gather(2, best).squeeze(-1)  # (B, K)
        y = batch["ret"] + batch["weight"] * q_next  # (B, K)
    q_taken = q.gather(2, batch["action"].unsqueeze(-1)).squeeze(-1)  # (B, K)
    m = batch["loss_mask"]
    loss = F.huber_loss(q_taken[m], y[m], delta=huber_delta)
    return loss, q_taken[m].detach()


class DQNBatcher:
    """Samples windows over a replay and attaches each position's n-step target inputs."""

    def __init__(self, data: Transitions, num_actions: int, cfg: DQNConfig, context: int,
                 device: torch.device):
        self.seq: Sequences = build_sequences(data, num_actions)
        self.ret, self.steps, self.weight = n_step_targets(
            data.reward, data.terminated, data.episode_rows, cfg.gamma, cfg.n_step
        )
        self.action = data.action
        self.context, self.device, self.batch_size = context, device, cfg.batch_size
        self.n_step = cfg.n_step

    def sample(self, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        seq, k = self.seq, self.context
        ends = rng.integers(0, len(seq), self.batch_size)
        index, mask = seq.windows(ends, k)  # (B, K)
        row = seq.row[index]  # (B, K), -1 on final observations
        is_row = mask & (row >= 0)
        row = np.where(is_row, row, 0)
        next_ends = np.minimum(ends + self.n_step, seq.stop[ends])
        next_index, next_mask = seq.windows(next_ends, k)
        # bootstrap step of position j is index[j] + steps; its position in the shifted window:
        boot_pos = np.arange(k)[None, :] + self.steps[row] - (next_ends - ends)[:, None]
        boot_pos = np.clip(boot_pos, 0, k - 1)  # only clips masked positions
        d = self.device
        return {
            "obs": to_tensor(seq.obs[index], d),
            "prev_action": to_tensor(seq.prev_action[index], d),
            "mask": to_tensor(mask, d),
            "next_obs": to_tensor(seq.obs[next_index], d),
            "next_prev_action": to_tensor(seq.prev_action[next_index], d),
            "next_mask": to_tensor(next_mask, d),
            "action": to_tensor(self.action[row], d),
            "ret": to_tensor(self.ret[row], d),
            "weight": to_tensor(self.weight[row], d),
            "boot_pos": to_tensor(boot_pos, d),
            "loss_mask": to_tensor(is_row, d),
        }


@dataclass
class DQNState:
    """What persists between `train_dqn` calls in one process (a `trl run`)."""

    optimizer: torch.optim.Optimizer
    target: torch.nn.Module | None  # None for PPO, which shares this holder
    updates: int = 0


def new_state(model: torch.nn.Module, cfg: DQNConfig) -> DQNState:
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    target = copy.deepcopy(model).requires_grad_(False)
    return DQNState(optimizer, target)


def train_dqn(
    model: torch.nn.Module,
    data: Transitions,
    cfg: DQNConfig,
    state: DQNState,
    *,
    seed: int = 0,
    progress: Callable[[dict], None] | None = None,
) -> dict[str, float]:
    """``cfg.updates`` gradient steps on windows sampled from ``data``; returns mean metrics."""
    device = next(model.parameters()).device
    batcher = DQNBatcher(data, model.config.num_actions, cfg, model.config.context, device)
    rng = np.random.default_rng(seed)
    model.train()
    losses, qs = [], []
    start = time.perf_counter()
    for i in range(cfg.updates):
        batch = batcher.sample(rng)
        loss, q_taken = dqn_loss(model, state.target, batch, cfg.huber_delta)
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        state.optimizer.step()
        state.updates += 1
        if state.updates % cfg.target_every == 0:
            state.target.load_state_dict(model.state_dict())
        losses.append(loss.item())
        qs.append(q_taken.mean().item())
        if progress is not None and (i + 1) % 50 == 0:
            elapsed = time.perf_counter() - start
            progress({"update": i + 1, "loss": float(np.mean(losses[-50:])),
                      "q": float(np.mean(qs[-50:])), "updates_per_s": (i + 1) / elapsed})
    model.eval()
    wall = time.perf_counter() - start
    return {
        "losses/td_loss": float(np.mean(losses)) if losses else float("nan"),
        "losses/q_values": float(np.mean(qs)) if qs else float("nan"),
        "charts/updates_per_s": cfg.updates / max(wall, 1e-9),
        "charts/train_s": wall,
        "charts/replay_rows": len(data),
    }
