"""PPO over K-step windows: GAE(lambda) per episode, clipped surrogate, value loss, entropy bonus,
advantage normalisation, minibatches of rows, several epochs.

Each row is learned at the last position of the K-step window ending at it, which is exactly
what the policy saw when it acted, so the probability ratios start at 1. (Learning every
position of a window would train shorter contexts than the policy acts with, and the ratios
would compare two different policies.)

The dataset holds whole episodes and each episode's final observation, so GAE bootstraps from
V(final_obs) at truncation and never at termination.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from transformer_rl.collect.policies import ModelPolicy
from transformer_rl.datasets.reader import Transitions
from transformer_rl.datasets.sequences import Sequences, build_sequences
from transformer_rl.distributed import agree_min
from transformer_rl.models import autocast, distinct_steps, on_windows
from transformer_rl.settings import NON_NEGATIVE, POSITIVE, UNIT, setting
from transformer_rl.train.learner import Learner, Progress, check_finite, optimizer_step, to_tensor


@dataclass
class PPOConfig:
    # the objective
    gamma: float = setting(0.99, "Discount.", UNIT)
    gae_lambda: float = setting(0.95, "GAE lambda.", UNIT)
    clip: float = setting(0.2, "Surrogate clipping.", POSITIVE)
    ent_coef: float = setting(0.01, "Entropy bonus.", NON_NEGATIVE)
    vf_coef: float = setting(0.5, "Value loss weight.", NON_NEGATIVE)
    # Atari, in training only
    reward_clip: bool = setting(False, "Train on sign(reward); evaluation reports the real score.")
    episodic_life: bool = setting(False, "A lost life ends the return; play goes on.")
    # `trl train` (offline) only
    replay_rows: int = setting(100_000, "The dataset's newest shards holding this many rows.", POSITIVE)
    # optimisation
    epochs: int = setting(4, "Passes over each rollout (over the data for `train`).", POSITIVE)
    batch: int = setting(128, "Rows per gradient step, each with its K-step window.", POSITIVE)
    lr: float = setting(2.5e-4, "Adam learning rate.", POSITIVE)
    max_grad_norm: float = setting(0.5, "Gradient clipping (global norm).", POSITIVE)

def gae(reward: np.ndarray, value: np.ndarray, next_value: np.ndarray, terminated: np.ndarray,
        episode_rows: np.ndarray, gamma: float, lam: float) -> np.ndarray:
    """Advantages per row. delta_t = r_t + gamma V(s_{t+1}) [not terminated_t] - V(s_t);
    A_t = delta_t + gamma lambda A_{t+1} within the episode, A = 0 after its last row and after
    any terminated row. ``next_value[t]`` is V of the next step (the final observation's value
    on last rows)."""
    delta = reward + gamma * next_value * (~terminated) - value
    adv = np.zeros(len(reward), np.float64)
    last = terminated.copy()
    last[episode_rows[1:] - 1] = True
    running = 0.0
    for t in range(len(reward) - 1, -1, -1):
        if last[t]:
            running = 0.0
        running = delta[t] + gamma * lam * running
        adv[t] = running
    return adv.astype(np.float32)


@torch.no_grad()
def step_values(model, seq: Sequences, batch: int = 1024) -> np.ndarray:
    """V at every step of the sequence (rows and final observations), full context each."""
    k = model.config.context
    device = next(model.parameters()).device
    out = np.zeros(len(seq), np.float32)
    for i in range(0, len(seq), batch):
        ends = np.arange(i, min(i + batch, len(seq)))
        index, mask = seq.windows(ends, k)
        steps, windows = distinct_steps(index)
        with autocast(device):
            v = on_windows(model, to_tensor(seq.obs[steps], device), to_tensor(windows, device),
                           to_tensor(seq.prev_action[index], device), to_tensor(mask, device),
                           last_only=True).value[:, -1]
        out[ends] = v.float().cpu().numpy()
    return out


def ppo_loss(model, batch: dict[str, torch.Tensor], cfg: PPOConfig):
    """Clipped surrogate + value loss - entropy bonus, at the last position of each window:
    batch["obs"] holds each step once (N, D), batch["windows"] (B, K) the windows into it."""
    out = on_windows(model, batch["obs"], batch["windows"], batch["prev_action"], batch["mask"], last_only=True)
    logits, value = out.logits[:, -1].float(), out.value[:, -1].float()  # (B, A), (B,)
    dist = torch.distributions.Categorical(logits=logits)
    logp = dist.log_prob(batch["action"])
    adv = batch["adv"]
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    log_ratio = logp - batch["old_logp"]
    ratio = log_ratio.exp()
    pg_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - cfg.clip, 1 + cfg.clip)).mean()
    v_loss = 0.5 * ((value - batch["ret"]) ** 2).mean()
    entropy_loss = dist.entropy().mean()
    loss = pg_loss - cfg.ent_coef * entropy_loss + cfg.vf_coef * v_loss
    with torch.no_grad():
        approx_kl = ((ratio - 1) - log_ratio).mean()
        clipfrac = ((ratio - 1).abs() > cfg.clip).float().mean()
    return loss, {"losses/policy_loss": pg_loss.item(), "losses/value_loss": v_loss.item(),
                  "losses/entropy": entropy_loss.item(), "losses/approx_kl": approx_kl.item(),
                  "losses/clipfrac": clipfrac.item()}


class PPOLearner(Learner):
    """Adam over the model; ``update`` runs several epochs over one rollout."""

    on_policy = True
    log_keys = ("losses/approx_kl", "losses/policy_loss")

    def __init__(self, model: torch.nn.Module, cfg: PPOConfig):
        self.model, self.cfg = model, cfg
        self.optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, eps=1e-5)
        self.updates = 0

    def behaviour(self, num_envs: int, seed: int, env_steps: int, describe: dict[str, Any]) -> ModelPolicy:
        return ModelPolicy(self.model, num_envs, "sample", algo="ppo", seed=seed, describe=describe)

    def update(self, data: Transitions, *, seed: int, progress: Progress | None = None) -> dict[str, float]:
        """Every row of ``data.learn`` (all rows if None; the others are context) is a loss
        position once per epoch. With ``cfg.episodic_life``, rows that lost a life are terminal
        for the returns."""
        cfg, model = self.cfg, self.model
        learn = np.ones(len(data), bool) if data.learn is None else data.learn
        if np.isnan(data.logp[learn]).any():
            raise ValueError("PPO needs the behaviour policy's logp in the dataset (collect with it)")
        device, k = next(model.parameters()).device, model.config.context
        seq = build_sequences(data, model.config.num_actions)
        model.eval()
        values = step_values(model, seq)
        value, next_value = values[seq.step_of_row], values[seq.step_of_row + 1]
        reward = np.sign(data.reward) if cfg.reward_clip else data.reward
        terminal = data.terminated
        if cfg.episodic_life and data.life_lost is not None:
            terminal = terminal | data.life_lost
        adv = gae(reward, value, next_value, terminal, data.episode_rows, cfg.gamma, cfg.gae_lambda)
        ret = adv + value
        rows = np.flatnonzero(learn)
        rng = np.random.default_rng(seed)
        n_batches = agree_min(max(1, len(rows) // cfg.batch))  # under torchrun, every rank's count
        model.train()
        logs: list[dict[str, float]] = []
        start = time.perf_counter()
        for _ in range(cfg.epochs):
            for chunk in np.array_split(rng.permutation(rows), n_batches):
                # each row sees exactly the window it acted on: the K steps ending at it
                index, mask = seq.windows(seq.step_of_row[chunk], k)  # (B, K)
                steps, windows = distinct_steps(index)
                batch = {
                    "obs": to_tensor(seq.obs[steps], device),  # each step once, however many windows
                    "windows": to_tensor(windows, device),
                    "prev_action": to_tensor(seq.prev_action[index], device),
                    "mask": to_tensor(mask, device),
                    "action": to_tensor(data.action[chunk], device),
                    "old_logp": to_tensor(data.logp[chunk], device),
                    "adv": to_tensor(adv[chunk], device),
                    "ret": to_tensor(ret[chunk], device),
                }
                with autocast(device):
                    loss, info = ppo_loss(model, batch, cfg)
                check_finite(loss, len(logs) + 1)
                optimizer_step(self, loss, cfg.max_grad_norm)
                logs.append(info)
                if progress is not None:
                    progress(len(logs), cfg.epochs * n_batches, {"loss": info["losses/policy_loss"]})
        model.eval()
        self.updates += len(logs)
        explained = 1 - np.var((ret - value)[learn]) / (np.var(ret[learn]) + 1e-8)
        metrics = {key: float(np.mean([x[key] for x in logs])) for key in logs[0]}
        return {**metrics, "losses/explained_variance": float(explained),
                "charts/train_s": time.perf_counter() - start, "charts/rows": int(learn.sum()),
                "charts/updates": len(logs)}
