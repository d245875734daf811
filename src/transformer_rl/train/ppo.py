"""PPO over K-step windows: GAE(lambda) per episode, clipped surrogate, value loss, entropy bonus,
advantage normalisation, minibatches of windows, several epochs.

The dataset holds whole episodes and each episode's final observation, so GAE bootstraps from
V(final_obs) at truncation and never at termination.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from transformer_rl.datasets.reader import Transitions
from transformer_rl.train.sequences import Sequences, build_sequences, to_tensor


@dataclass
class PPOConfig:
    epochs: int = 4  # passes over each iteration's rollouts
    minibatch_windows: int = 16  # windows of K steps per gradient step
    lr: float = 2.5e-4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip: float = 0.2  # surrogate clipping
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    reward_scale: float = 1.0  # rewards are multiplied by this in training only

    def to_json(self) -> dict:
        return asdict(self)


def gae(reward: np.ndarray, value: np.ndarray, next_value: np.ndarray, terminated: np.ndarray,
        episode_rows: np.ndarray, gamma: float, lam: float) -> np.ndarray:
    """Advantages per row. delta_t = r_t + gamma V(s_{t+1}) [not terminated_t] - V(s_t);
    A_t = delta_t + gamma lambda A_{t+1} within the episode, A = 0 after its last row.
    ``next_value[t]`` is V of the next step (the final observation's value on last rows)."""
    delta = reward + gamma * next_value * (~terminated) - value
    adv = np.zeros(len(reward), np.float64)
    last = np.zeros(len(reward), bool)
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
        v = model(to_tensor(seq.obs[index], device), to_tensor(seq.prev_action[index], device),
                  to_tensor(mask, device)).value[:, -1]
        out[ends] = v.float().cpu().numpy()
    return out


def ppo_loss(model, batch: dict[str, torch.Tensor], cfg: PPOConfig):
    out = model(batch["obs"], batch["prev_action"], batch["mask"])
    m = batch["loss_mask"]
    logits, value = out.logits[m], out.value[m]  # (P, A), (P,)
    dist = torch.distributions.Categorical(logits=logits)
    logp = dist.log_prob(batch["action"][m])
    adv = batch["adv"][m]
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    log_ratio = logp - batch["old_logp"][m]
    ratio = log_ratio.exp()
    pg_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - cfg.clip, 1 + cfg.clip)).mean()
    v_loss = 0.5 * ((value - batch["ret"][m]) ** 2).mean()
    entropy_loss = dist.entropy().mean()
    loss = pg_loss - cfg.ent_coef * entropy_loss + cfg.vf_coef * v_loss
    with torch.no_grad():
        approx_kl = ((ratio - 1) - log_ratio).mean()
        clipfrac = ((ratio - 1).abs() > cfg.clip).float().mean()
    return loss, {"losses/policy_loss": pg_loss.item(), "losses/value_loss": v_loss.item(),
                  "losses/entropy": entropy_loss.item(), "losses/approx_kl": approx_kl.item(),
                  "losses/clipfrac": clipfrac.item()}


def train_ppo(model, data: Transitions, cfg: PPOConfig, optimizer: torch.optim.Optimizer,
              *, seed: int = 0) -> dict[str, float]:
    """Several epochs over one iteration's rollouts; every row is a loss position once per epoch."""
    if np.isnan(data.logp).any():
        raise ValueError("PPO needs the behaviour policy's logp in the dataset (collect with it)")
    device = next(model.parameters()).device
    k = model.config.context
    seq = build_sequences(data, model.config.num_actions)
    model.eval()
    values = step_values(model, seq)
    value, next_value = values[seq.step_of_row], values[seq.step_of_row + 1]
    adv = gae(data.reward * cfg.reward_scale, value, next_value, data.terminated, data.episode_rows,
              cfg.gamma, cfg.gae_lambda)
    ret = adv + value
    # non-overlapping windows: rows j // K == c of each episode form chunk c
    last_row = np.zeros(len(data), bool)
    last_row[data.episode_rows[1:] - 1] = True
    ends = np.flatnonzero(((data.step + 1) % k == 0) | last_row)
    rng = np.random.default_rng(seed)
    model.train()
    logs: list[dict[str, float]] = []
    start = time.perf_counter()
    for _ in range(cfg.epochs):
        for chunk in np.array_split(rng.permutation(ends), max(1, len(ends) // cfg.minibatch_windows)):
            index, mask = seq.windows(seq.step_of_row[chunk], k)  # (B, K)
            row = seq.row[index]
            is_row = mask & (row >= 0)
            row = np.where(is_row, row, 0)
            same_chunk = data.step[row] // k == (data.step[chunk] // k)[:, None]
            batch = {
                "obs": to_tensor(seq.obs[index], device),
                "prev_action": to_tensor(seq.prev_action[index], device),
                "mask": to_tensor(mask, device),
                "loss_mask": to_tensor(is_row & same_chunk, device),
                "action": to_tensor(data.action[row], device),
                "old_logp": to_tensor(data.logp[row], device),
                "adv": to_tensor(adv[row], device),
                "ret": to_tensor(ret[row], device),
            }
            loss, info = ppo_loss(model, batch, cfg)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            logs.append(info)
    model.eval()
    explained = 1 - np.var(ret - value) / (np.var(ret) + 1e-8)
    metrics = {key: float(np.mean([x[key] for x in logs])) for key in logs[0]}
    return {**metrics, "losses/explained_variance": float(explained),
            "charts/train_s": time.perf_counter() - start, "charts/rows": len(data),
            "charts/updates": len(logs)}
