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
from dataclasses import asdict, dataclass

import numpy as np
import torch

from transformer_rl.collect.rollout import Trace
from transformer_rl.datasets.reader import Transitions
from transformer_rl.train.sequences import Sequences, build_sequences, to_tensor


@dataclass
class PPOConfig:
    epochs: int = 4  # passes over each iteration's rollouts
    minibatch_rows: int = 128  # rows (each with its K-step context window) per gradient step
    lr: float | None = 2.5e-4  # None: the preset's (`trl run`)
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip: float = 0.2  # surrogate clipping
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    reward_clip: bool | None = None  # train on sign(reward) (Atari); evaluation reports the real score
    episodic_life: bool | None = None  # a lost life ends the return in training (Atari); play goes on

    def to_json(self) -> dict:
        return asdict(self)


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


def rollout_transitions(trace: Trace) -> tuple[Transitions, np.ndarray, np.ndarray]:
    """A rollout as Transitions of episode fragments, which rows to learn from, and which rows
    lost a life (Atari; all False otherwise).

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
        episode_start=np.repeat(episode_rows[:-1], lengths),
        final_obs=trace.obs[last_t, last_env],
        episode_rows=episode_rows,
        manifest={},
    )
    life_lost = np.zeros(n, bool)
    if trace.lives is not None:
        life_lost = trace.lives[src_t + 1, src_env] < trace.lives[src_t, src_env]
    return data, src_t >= trace.prefix, life_lost


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
    """Clipped surrogate + value loss - entropy bonus, at the last position of each window."""
    out = model(batch["obs"], batch["prev_action"], batch["mask"])
    logits, value = out.logits[:, -1], out.value[:, -1]  # (B, A), (B,)
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


def train_ppo(model, data: Transitions, cfg: PPOConfig, optimizer: torch.optim.Optimizer,
              *, seed: int = 0, learn: np.ndarray | None = None,
              life_lost: np.ndarray | None = None) -> dict[str, float]:
    """Several epochs over one iteration's rollouts; every row (of ``learn``, if given; other
    rows are context) is a loss position once per epoch. With ``cfg.episodic_life``, rows that
    lost a life count as terminal for the returns."""
    learn = np.ones(len(data), bool) if learn is None else learn
    if np.isnan(data.logp[learn]).any():
        raise ValueError("PPO needs the behaviour policy's logp in the dataset (collect with it)")
    device = next(model.parameters()).device
    k = model.config.context
    seq = build_sequences(data, model.config.num_actions)
    model.eval()
    values = step_values(model, seq)
    value, next_value = values[seq.step_of_row], values[seq.step_of_row + 1]
    reward = np.sign(data.reward) if cfg.reward_clip else data.reward
    terminal = data.terminated | (life_lost if cfg.episodic_life and life_lost is not None else False)
    adv = gae(reward, value, next_value, terminal, data.episode_rows,
              cfg.gamma, cfg.gae_lambda)
    ret = adv + value
    # each learned row sees exactly the window it acted on: the K steps ending at it, within
    # its episode (the rollout keeps the K steps before it as context)
    rows = np.flatnonzero(learn)
    rng = np.random.default_rng(seed)
    model.train()
    logs: list[dict[str, float]] = []
    start = time.perf_counter()
    for _ in range(cfg.epochs):
        for chunk in np.array_split(rng.permutation(rows), max(1, len(rows) // cfg.minibatch_rows)):
            index, mask = seq.windows(seq.step_of_row[chunk], k)  # (B, K)
            batch = {
                "obs": to_tensor(seq.obs[index], device),
                "prev_action": to_tensor(seq.prev_action[index], device),
                "mask": to_tensor(mask, device),
                "action": to_tensor(data.action[chunk], device),
                "old_logp": to_tensor(data.logp[chunk], device),
                "adv": to_tensor(adv[chunk], device),
                "ret": to_tensor(ret[chunk], device),
            }
            loss, info = ppo_loss(model, batch, cfg)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            logs.append(info)
    model.eval()
    explained = 1 - np.var((ret - value)[learn]) / (np.var(ret[learn]) + 1e-8)
    metrics = {key: float(np.mean([x[key] for x in logs])) for key in logs[0]}
    return {**metrics, "losses/explained_variance": float(explained),
            "charts/train_s": time.perf_counter() - start, "charts/rows": int(learn.sum()),
            "charts/updates": len(logs)}
