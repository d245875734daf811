"""Feature tokens: one token per observation feature, attention across a state's features.

The original Transformer-RL (yashbonde/Transformer-RL, model.py) reads one observation and makes
each of its values a token (Atari RAM: 128 bytes, 128 tokens). `FeatureTokens` generalises it
into the embedding of one step for GPT (models/gpt.py, ``tokens="feature"``):

  token_i = E_value(x_i) + E_feature[i]             one per feature i of each step: (B*T, D, C)
    E_value  "linear": W x_i + b of the normalised value, one W for every feature;
             "table": one of 256 learned vectors per byte value (RAM bytes are often codes)
  n_layer pre-LayerNorm blocks of bidirectional attention across the D tokens (without
  E_feature the tokens are a set: permuting the features permutes nothing in the readout)
  readout -> (B, T, C), the step's token:
    summary  a learned token appended last; its output (the last block runs its query alone)
    mean     the mean of the D outputs
    flat     the seed's: one number per feature (a linear map of its output), then D -> C

Each step is encoded alone; only GPT's causal blocks over the pooled step tokens (time_layers
of them, none at context 1) mix steps, so no position sees a later step.

`SeedGPT` is ``tokens="seed"``: the original's own choices as its description gives them: one
observation, values in [0, 1] through one linear projection, causal attention across the
features in their order, no position or feature embedding, one number per feature, and the
action and value heads reading those D numbers.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from transformer_rl.errors import UsageError
from transformer_rl.models.gpt import Block, GPTConfig, Heads, ModelOutput, PolicyModel, init_weights


class FeatureTokens(nn.Module):
    """(B, T, D) observations -> (B, T, C) step embeddings (the seed's flat readout: (B, T, D))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        D, C = config.obs_dim, config.n_embd
        self.config, self.causal = config, config.tokens == "seed"
        self.wve = nn.Embedding(256, C) if config.feature_embed == "table" else nn.Linear(1, C)
        self.wfe = nn.Embedding(D, C) if config.feature_id else None
        self.summary = nn.Parameter(0.02 * torch.randn(C)) if config.readout == "summary" else None
        self.h = nn.ModuleList([Block(config, causal=self.causal) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(C)
        self.w_num = nn.Linear(C, 1) if config.readout == "flat" else None
        self.w_out = nn.Linear(D, C) if config.readout == "flat" and config.tokens != "seed" else None

    def embed(self, obs: torch.Tensor, norm: nn.Module) -> torch.Tensor:
        """(B, T, D) -> (B*T, N, C): N = D tokens, and the summary token last."""
        B, T, D = obs.shape
        if self.config.feature_embed == "table":  # the raw byte values index the table
            x = self.wve(obs.reshape(B * T, D).long().clamp(0, 255))  # (BT, D, C)
        else:
            x = self.wve(norm(obs).reshape(B * T, D, 1))  # (BT, D, C)
        if self.wfe is not None:
            x = x + self.wfe.weight
        if self.summary is not None:
            x = torch.cat([x, self.summary.expand(B * T, 1, -1)], dim=1)  # (BT, D + 1, C)
        return x

    def forward(self, obs: torch.Tensor, norm: nn.Module) -> torch.Tensor:
        B, T, _ = obs.shape
        x = self.embed(obs, norm)
        for i, block in enumerate(self.h):  # only the summary token is read: its query alone, last
            x = block(x, None, last=self.summary is not None and i == len(self.h) - 1)
        x = self.ln_f(x)
        if self.summary is not None:
            y = x[:, -1]  # (BT, C)
        elif self.w_num is None:
            y = x.mean(1)  # (BT, C)
        else:
            y = self.w_num(x).squeeze(-1)  # (BT, D): one number per feature
            y = self.w_out(y) if self.w_out is not None else y
        return y.view(B, T, -1)

    @torch.no_grad()
    def attention(self, obs: torch.Tensor, norm: nn.Module) -> torch.Tensor:
        """(n_layer, B, T, n_head, N, N): each block's attention across a step's N tokens (for
        probes: which features each feature, and the summary token, reads)."""
        B, T, _ = obs.shape
        x = self.embed(obs, norm)
        maps = []
        for block in self.h:
            maps.append(block.attn.probs(block.ln_1(x), None))
            x = block(x, None)
        N = x.shape[1]
        return torch.stack(maps).view(len(self.h), B, T, self.config.n_head, N, N)


class SeedGPT(PolicyModel):
    """``--tokens seed``: the original Transformer-RL's transformer over one observation."""

    def __init__(self, config: GPTConfig):
        super().__init__(config.obs_dim)
        if config.rtg or config.max_timestep:
            raise UsageError("--tokens seed reads one observation, no return-to-go or timestep; "
                             "use --tokens feature for --algo dt or bc")
        self.config = config
        self.features = FeatureTokens(config)
        self.heads = Heads(config.obs_dim, config.num_actions)  # they read the D numbers
        init_weights(self, config.n_layer)

    def forward(self, obs: torch.Tensor, prev_action: torch.Tensor, mask: torch.Tensor | None = None,
                rtg: torch.Tensor | None = None, timestep: torch.Tensor | None = None,
                last_only: bool = False) -> ModelOutput:
        """obs (B, T, D), each position on its own (the seed has no history); prev_action,
        mask, rtg and timestep are not read."""
        if last_only:
            obs = obs[:, -1:]
        return self.heads(self.features(obs, self.norm))  # (B, T, D) numbers -> heads

    @torch.no_grad()
    def attention(self, obs: torch.Tensor, prev_action: torch.Tensor, mask: torch.Tensor | None = None,
                  rtg: torch.Tensor | None = None, timestep: torch.Tensor | None = None) -> torch.Tensor:
        """(n_layer, B, T, n_head, D, D): causal attention across each observation's features."""
        return self.features.attention(obs, self.norm)
