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
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from transformer_rl.collect.policies import ModelPolicy
from transformer_rl.datasets.reader import Transitions
from transformer_rl.datasets.sequences import Sequences, build_sequences
from transformer_rl.models import autocast
from transformer_rl.settings import POSITIVE, UNIT, Range, setting
from transformer_rl.train.learner import Learner, Progress, check_finite, optimizer_step, to_tensor


@dataclass
class DQNConfig:
    # optimisation
    updates: int = setting(1000, "Gradient steps (per iteration in `run`).", POSITIVE)
    batch: int = setting(64, "Windows per gradient step.", POSITIVE)
    lr: float = setting(5e-4, "Adam learning rate.", POSITIVE)
    max_grad_norm: float = setting(10.0, "Gradient clipping (global norm).", POSITIVE)
    # targets: n-step double DQN from a target network
    gamma: float = setting(0.99, "Discount.", UNIT)
    n_step: int = setting(3, "n-step returns.", Range(ge=1))
    target_every: int = setting(200, "Gradient steps between target-network copies.", POSITIVE)
    huber_delta: float = setting(1.0, "Huber loss: quadratic below this TD error.", POSITIVE)
    # the replay
    replay_rows: int = setting(100_000, "The replay: the dataset's newest shards holding this many rows.",
                               POSITIVE)
    # epsilon-greedy collection in `run`, linear over total env steps
    eps_start: float = setting(1.0, "Exploration: epsilon at the first step.", UNIT)
    eps_end: float = setting(0.02, "Exploration: final epsilon.", UNIT)
    eps_decay_steps: int = setting(40_000, "Exploration: env steps from eps-start to eps-end.", POSITIVE)

    def epsilon_at(self, env_steps: int) -> float:
        frac = min(1.0, env_steps / self.eps_decay_steps)
        return self.eps_start + frac * (self.eps_end - self.eps_start)


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
    q = model(batch["obs"], batch["prev_action"], batch["mask"]).q.float()  # (B, K, A)
    with torch.no_grad():
        boot = batch["boot_pos"].unsqueeze(-1).expand(-1, -1, q.shape[-1])  # (B, K, A) in window 2
        next_inputs = (batch["next_obs"], batch["next_prev_action"], batch["next_mask"])
        best = model(*next_inputs).q.gather(1, boot).argmax(-1, keepdim=True)  # double DQN
        q_next = target(*next_inputs).q.float().gather(1, boot).gather(2, best).squeeze(-1)  # (B, K)
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
        self.context, self.device, self.batch_size = context, device, cfg.batch
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


class DQNLearner(Learner):
    """Online network (the model), target network, Adam; ``update`` runs ``cfg.updates`` steps."""

    on_policy = False
    log_keys = ("charts/epsilon", "losses/td_loss")
    acts_on = "q"

    def __init__(self, model: torch.nn.Module, cfg: DQNConfig):
        self.model, self.cfg = model, cfg
        self.optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        self.target = copy.deepcopy(model).requires_grad_(False)
        self.updates = 0

    def behaviour(self, num_envs: int, seed: int, env_steps: int, describe: dict[str, Any]) -> ModelPolicy:
        return ModelPolicy(self.model, num_envs, "epsilon", algo="dqn", acts_on=self.acts_on,
                           epsilon=self.cfg.epsilon_at(env_steps), seed=seed,
                           describe=describe)

    def update(self, data: Transitions, *, seed: int, progress: Progress | None = None) -> dict[str, float]:
        """``cfg.updates`` gradient steps on windows sampled from ``data``; returns mean metrics."""
        cfg, model = self.cfg, self.model
        batcher = DQNBatcher(data, model.config.num_actions, cfg, model.config.context,
                             next(model.parameters()).device)
        rng = np.random.default_rng(seed)
        model.train()
        losses, qs = [], []
        start = time.perf_counter()
        for i in range(cfg.updates):
            with autocast(batcher.device):
                loss, q_taken = dqn_loss(model, self.target, batcher.sample(rng), cfg.huber_delta)
            losses.append(check_finite(loss, i + 1))
            optimizer_step(self, loss, cfg.max_grad_norm)
            self.updates += 1
            if self.updates % cfg.target_every == 0:
                self.target.load_state_dict(model.state_dict())
            qs.append(q_taken.mean().item())
            if progress is not None and (i + 1) % 50 == 0:
                progress(i + 1, cfg.updates, {"loss": float(np.mean(losses[-50:]))})
        model.eval()
        wall = time.perf_counter() - start
        return {
            "losses/td_loss": float(np.mean(losses)),
            "losses/q_values": float(np.mean(qs)),
            "charts/updates_per_s": cfg.updates / max(wall, 1e-9),
            "charts/train_s": wall,
            "charts/replay_rows": len(data),
        }
