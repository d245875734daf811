"""The dense baseline: the same interface as GPT with a context of one step."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from transformer_rl.models.gpt import Heads, ModelOutput, PolicyModel


@dataclass
class MLPConfig:
    obs_dim: int
    num_actions: int
    context: int = 1  # steps of history stacked as the input (1: each position sees its own step)
    hidden: int = 64
    n_layer: int = 2  # hidden layers
    prev_action: bool = False
    activation: str = "relu"  # relu (DQN practice) or tanh (CleanRL's PPO)
    model: str = "mlp"


class MLP(PolicyModel):
    def __init__(self, config: MLPConfig):
        super().__init__(config.obs_dim)
        self.config = config
        act = {"relu": nn.ReLU, "tanh": nn.Tanh}[config.activation]
        n_in = (config.obs_dim + (config.num_actions + 1 if config.prev_action else 0)) * config.context
        layers: list[nn.Module] = []
        for _ in range(config.n_layer):
            layers += [nn.Linear(n_in, config.hidden), act()]
            n_in = config.hidden
        self.body = nn.Sequential(*layers)
        self.heads = Heads(n_in, config.num_actions)

    def forward(self, obs: torch.Tensor, prev_action: torch.Tensor, mask: torch.Tensor | None = None,
                rtg: torch.Tensor | None = None, timestep: torch.Tensor | None = None,
                last_only: bool = False) -> ModelOutput:
        k = self.config.context
        if last_only and k == 1:
            obs, prev_action = obs[:, -1:], prev_action[:, -1:]
        x = self.norm(obs)  # (B, T, D): every position on its own
        if self.config.prev_action:
            one_hot = nn.functional.one_hot(prev_action, self.config.num_actions + 1)
            x = torch.cat([x, one_hot.float()], dim=-1)
        if k > 1:
            x = stack_history(x, mask, k)
            if last_only:
                x = x[:, -1:]
        return self.heads(self.body(x))


def stack_history(x: torch.Tensor, mask: torch.Tensor | None, k: int) -> torch.Tensor:
    """(B, T, F) -> (B, T, k * F): each position's features with those of the k - 1 steps
    before it, oldest first; steps before the window or on its left padding are zeros."""
    if mask is not None:
        x = x * mask.unsqueeze(-1).to(x.dtype)
    B, T, F = x.shape
    padded = nn.functional.pad(x, (0, 0, k - 1, 0))  # (B, T + k - 1, F)
    windows = padded.unfold(1, k, 1)  # (B, T, F, k)
    return windows.transpose(-1, -2).reshape(B, T, k * F)
