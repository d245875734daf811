"""Decision Transformer (Chen et al. 2021) and behaviour cloning, offline, on any dataset.

One token per timestep: the observation, the previous action, the return-to-go and the
timestep within the episode are embedded and summed into it (models/gpt.py), so the action
a_t is predicted at position t from tokens up to and including (R_t, o_t), never from a_t
itself (it enters only at t + 1, as the previous action). The loss is cross-entropy on the
action at every real position of K-step windows that end on an episode's rows.

Returns-to-go are undiscounted, per episode: R_t = r_t + r_{t+1} + ... + r_T. The model divides
them by ``rtg_scale`` (the data's largest episode return). BC is the same network and loss
without the return-to-go, on all episodes or the best ``top_percent`` of them (%BC).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from transformer_rl.collect.policies import ModelPolicy
from transformer_rl.datasets.reader import Transitions
from transformer_rl.datasets.sequences import build_sequences
from transformer_rl.errors import UsageError
from transformer_rl.models import autocast
from transformer_rl.settings import POSITIVE, Range, setting
from transformer_rl.train.learner import Learner, Progress, check_finite, optimizer_step, to_tensor

MAX_TIMESTEP = 2048


@dataclass
class DTConfig:
    # optimisation: AdamW with a linear warmup, as in the paper
    updates: int = setting(5000, "Gradient steps (per iteration in `run`).", POSITIVE)
    batch: int = setting(256, "Windows per gradient step.", POSITIVE)
    lr: float = setting(1e-3, "AdamW learning rate (after warmup).", POSITIVE)
    weight_decay: float = setting(1e-4, "AdamW weight decay.", Range(ge=0))
    warmup_steps: int = setting(200, "Gradient steps of linear learning-rate warmup.", Range(ge=0))
    max_grad_norm: float = setting(0.25, "Gradient clipping (global norm).", POSITIVE)
    # the data
    replay_rows: int = setting(10_000_000, "The dataset's newest shards holding this many rows.", POSITIVE)
    top_percent: float = setting(100.0, "Train on the best X% of episodes by return (BC: %BC).",
                                 Range(gt=0, le=100))
    below_return: float | None = setting(None, "Train only on episodes whose return is below this "
                                         "(weak-data experiments).")
    # online fine-tuning (`trl run --algo dt --init DT_CHECKPOINT`)
    target_scale: float = setting(1.3, "Online: play for this times the best return seen so far.",
                                  POSITIVE)
    ent_coef: float = setting(0.0, "Entropy bonus on the action distribution (online: keeps it "
                              "stochastic).", Range(ge=0))


def returns_to_go(reward: np.ndarray, episode_rows: np.ndarray) -> np.ndarray:
    """R_t = sum of the rewards from row t to its episode's end (undiscounted), (N,)."""
    rtg = np.empty(len(reward), np.float64)
    for a, b in zip(episode_rows[:-1], episode_rows[1:], strict=True):
        rtg[a:b] = np.cumsum(reward[a:b][::-1])[::-1]
    return rtg.astype(np.float32)


def action_loss(model, batch: dict[str, torch.Tensor], ent_coef: float = 0.0
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of the action at every real (unmasked) position, minus an entropy bonus;
    and the accuracy."""
    out = model(batch["obs"], batch["prev_action"], batch["mask"], batch["rtg"], batch["timestep"])
    m = batch["mask"]  # (B, K)
    logits = out.logits[m].float()  # (positions, A)
    loss = F.cross_entropy(logits, batch["action"][m])
    if ent_coef:
        loss = loss - ent_coef * torch.distributions.Categorical(logits=logits).entropy().mean()
    accuracy = (logits.argmax(-1) == batch["action"][m]).float().mean()
    return loss, accuracy


class DTLearner(Learner):
    """AdamW over the model; ``update`` runs ``cfg.updates`` steps on windows of ``data``.
    ``conditioned`` False makes it behaviour cloning."""

    on_policy = False
    log_keys = ("losses/action_loss", "charts/action_accuracy")
    conditioned = True

    def __init__(self, model: torch.nn.Module, cfg: DTConfig):
        if self.conditioned and not getattr(model.config, "rtg", False):
            raise UsageError("--algo dt needs --model gpt (the return-to-go is embedded in its tokens)")
        self.model, self.cfg = model, cfg
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.updates = 0
        self.best_return = 0.0  # in the data trained on: the default target of `trl eval`

    @property
    def eval_target(self) -> float | None:
        """What `trl run` evaluates a Decision Transformer for: the best return seen."""
        return self.best_return if self.conditioned else None

    @classmethod
    def saved_target(cls, state: dict[str, Any]) -> float | None:
        return float(state.get("best_return", 0.0)) if cls.conditioned else None

    @classmethod
    def model_extras(cls, cfg: DTConfig, spec, data: Transitions) -> dict[str, Any]:
        returns = data.episode_returns()
        scale = float(max(np.abs(returns).max(initial=0.0), 1.0))
        # steps past MAX_TIMESTEP share the last embedding (Atari episodes can run 27,000 steps)
        return {"rtg": cls.conditioned, "rtg_scale": scale,
                "max_timestep": min(spec.max_episode_steps + 1, MAX_TIMESTEP)}

    def behaviour(self, num_envs: int, seed: int, env_steps: int, describe: dict[str, Any]) -> ModelPolicy:
        target = self.cfg.target_scale * self.best_return if self.conditioned else 0.0
        return ModelPolicy(self.model, num_envs, "sample", algo="dt", seed=seed, describe=describe,
                           target_return=target)

    def update(self, data: Transitions, *, seed: int, progress: Progress | None = None) -> dict[str, float]:
        cfg, model = self.cfg, self.model
        device, k = next(model.parameters()).device, model.config.context
        seq = build_sequences(data, model.config.num_actions)
        rtg = np.zeros(len(seq), np.float32)
        rtg[seq.step_of_row] = returns_to_go(data.reward, data.episode_rows)
        timestep = np.zeros(len(seq), np.int64)
        timestep[seq.step_of_row] = data.step
        action = np.zeros(len(seq), np.int64)
        action[seq.step_of_row] = data.action
        episodes = data.best_episodes(cfg.top_percent, cfg.below_return)
        if not len(episodes):
            raise UsageError(f"no episode has a return below --below-return {cfg.below_return:g}; raise it")
        rows = data.rows_of(episodes)
        self.best_return = max(self.best_return, float(data.episode_returns()[episodes].max()))
        rng = np.random.default_rng(seed)
        model.train()
        losses, accuracies = [], []
        start = time.perf_counter()
        for i in range(cfg.updates):
            for group in self.optimizer.param_groups:  # linear warmup over the first updates
                group["lr"] = cfg.lr * min(1.0, (self.updates + i + 1) / max(1, cfg.warmup_steps))
            index, mask = seq.windows(seq.step_of_row[rng.choice(rows, cfg.batch)], k)  # (B, K)
            batch = {name: to_tensor(values, device) for name, values in (
                ("obs", seq.obs[index]), ("prev_action", seq.prev_action[index]), ("mask", mask),
                ("rtg", rtg[index]), ("timestep", timestep[index]), ("action", action[index]))}
            with autocast(device):
                loss, accuracy = action_loss(model, batch, cfg.ent_coef)
            losses.append(check_finite(loss, i + 1))
            accuracies.append(accuracy.item())
            optimizer_step(self, loss, cfg.max_grad_norm)
            if progress is not None and (i + 1) % 50 == 0:
                progress(i + 1, cfg.updates, {"loss": float(np.mean(losses[-50:]))})
        self.updates += cfg.updates
        model.eval()
        return {"losses/action_loss": float(np.mean(losses)),
                "charts/action_accuracy": float(np.mean(accuracies)),
                "charts/train_s": time.perf_counter() - start, "charts/rows": int(len(rows)),
                "charts/best_return": self.best_return}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "best_return": self.best_return}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.best_return = float(state.get("best_return", 0.0))


class BCLearner(DTLearner):
    """Behaviour cloning: the Decision Transformer's network and loss, no return-to-go."""

    conditioned = False
