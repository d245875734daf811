"""A GPT-style decoder-only transformer over timesteps: one token per step.

token_t = W_obs normalise(o_t) + E_action[a_{t-1}] + E_pos[t], pre-LayerNorm blocks with causal
self-attention, then Q-values, policy logits and a value at every position.

With ``tokens="feature"`` the step's embedding W_obs normalise(o_t) is instead read out of a
small transformer across the observation's features, one token each (models/features.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class GPTConfig:
    obs_dim: int
    num_actions: int
    context: int = 8  # K: timesteps per window (block_size)
    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 32
    dropout: float = 0.0
    prev_action: bool = True  # add an embedding of the previous action to each token
    gated: bool = False  # learned sigmoid gate on each residual branch (a GTrXL-style stabiliser)
    # Decision Transformer: add the return-to-go (divided by rtg_scale) and the timestep within
    # the episode (clipped below max_timestep) to each token
    rtg: bool = False
    rtg_scale: float = 1.0
    max_timestep: int = 0  # 0: no timestep embedding
    # the token layout: "step" (one token per timestep), "feature" (one token per observation
    # feature, attention across them, pooled into the step's token) or "seed" (the original
    # Transformer-RL's, see models/features.py); checkpoints without the field are "step"
    tokens: str = "step"
    feature_embed: str = "linear"  # a feature's value: "linear" (of the normalised value) or "table" (bytes)
    feature_id: bool = True  # add a learned embedding of which feature a token is (off: a set)
    readout: str = "summary"  # features -> step token: "summary" token, "mean" pool, "flat" (the seed's)
    time_layers: int = 1  # feature tokens with context > 1: causal blocks across steps (n_layer: across features)
    model: str = "gpt"


@dataclass
class ModelOutput:
    q: torch.Tensor  # (B, T, A) Q-values
    logits: torch.Tensor  # (B, T, A) policy logits
    value: torch.Tensor  # (B, T) state value


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, causal: bool = True):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.n_head, self.dropout, self.causal = config.n_head, config.dropout, causal

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None, last: bool = False) -> torch.Tensor:
        """(B, T, C) -> (B, T, C); with ``last`` only the last position's query: (B, 1, C)."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if last:  # the last query attends to every key: causal needs no mask (is_causal would
            q = q[:, :, -1:]  # align the single query with the first key)
            attn_mask = attn_mask[:, :, -1:] if attn_mask is not None else None
        y = F.scaled_dot_product_attention(  # (B, nh, Tq, hs)
            q, k, v, attn_mask=attn_mask, is_causal=self.causal and attn_mask is None and not last,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, q.shape[2], C))

    def probs(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        """(B, T, C) -> (B, nh, T, T): the attention probabilities forward's fused kernel uses."""
        B, T, C = x.shape
        if attn_mask is None and self.causal:
            attn_mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        q, k, _ = self.c_attn(x).split(C, dim=2)
        q, k = (t.view(B, T, self.n_head, -1).transpose(1, 2) for t in (q, k))  # (B, nh, T, hs)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
        return (scores if attn_mask is None else scores.masked_fill(~attn_mask, float("-inf"))).softmax(-1)


class MLPBlock(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Gate(nn.Module):
    """x + g * y with g = sigmoid(W [x, y] + b); b starts negative so the block starts near the
    identity, the property GTrXL credits for stable RL training (Parisotto et al. 2020)."""

    def __init__(self, n_embd: int):
        super().__init__()
        self.w = nn.Linear(2 * n_embd, n_embd)
        nn.init.zeros_(self.w.weight)
        nn.init.constant_(self.w.bias, -2.0)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x + torch.sigmoid(self.w(torch.cat([x, y], dim=-1))) * y


class Block(nn.Module):
    def __init__(self, config: GPTConfig, causal: bool = True):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config, causal)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLPBlock(config)
        self.gate_1 = Gate(config.n_embd) if config.gated else None
        self.gate_2 = Gate(config.n_embd) if config.gated else None

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None, last: bool = False) -> torch.Tensor:
        y = self.attn(self.ln_1(x), attn_mask, last)
        x = x[:, -1:] if last else x
        x = self.gate_1(x, y) if self.gate_1 else x + y
        y = self.mlp(self.ln_2(x))
        return self.gate_2(x, y) if self.gate_2 else x + y


class Heads(nn.Module):
    """Q-values, policy logits and value from features at every position."""

    def __init__(self, n_in: int, num_actions: int):
        super().__init__()
        self.q = nn.Linear(n_in, num_actions)
        self.pi = nn.Linear(n_in, num_actions)
        self.v = nn.Linear(n_in, 1)
        nn.init.normal_(self.pi.weight, std=0.01)  # near-uniform initial policy (PPO practice)
        nn.init.zeros_(self.pi.bias)

    def forward(self, h: torch.Tensor) -> ModelOutput:
        return ModelOutput(q=self.q(h), logits=self.pi(h), value=self.v(h).squeeze(-1))


class ObsNorm(nn.Module):
    """(obs - mean) / std with the statistics stored as buffers, so checkpoints carry them."""

    def __init__(self, obs_dim: int):
        super().__init__()
        self.register_buffer("obs_mean", torch.zeros(obs_dim))
        self.register_buffer("obs_std", torch.ones(obs_dim))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs.float() - self.obs_mean) / self.obs_std

    def set(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.obs_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.obs_std.copy_(torch.as_tensor(std, dtype=torch.float32).clamp_min(1e-6))


class PolicyModel(nn.Module):
    """What GPT and MLP share: observation scaling kept in buffers, and a parameter count."""

    def __init__(self, obs_dim: int):
        super().__init__()
        self.norm = ObsNorm(obs_dim)

    def set_obs_normalization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.norm.set(mean, std)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def time_blocks(config: GPTConfig) -> int:
    """Blocks across timesteps: n_layer for step tokens; for feature tokens time_layers, none
    at context 1 (the n_layer blocks there run across features)."""
    if config.tokens == "step":
        return config.n_layer
    return config.time_layers if config.context > 1 else 0


def _init_module(module: nn.Module) -> None:
    if isinstance(module, nn.Linear) and not isinstance(module, Gate):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)


def init_weights(model: nn.Module, n_layer: int) -> None:
    """N(0, 0.02) weights, zero biases; GPT-2: scale the init of residual projections by
    1/sqrt(2 * n_layer) so the residual stream's variance does not grow with depth; a
    near-uniform initial policy."""
    model.apply(_init_module)  # children before parents: the order the random draws follow
    for name, p in model.named_parameters():
        if name.endswith("c_proj.weight"):
            nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))
    nn.init.normal_(model.heads.pi.weight, std=0.01)


class GPT(PolicyModel):
    def __init__(self, config: GPTConfig):
        from transformer_rl.models.features import FeatureTokens  # it builds on Block

        super().__init__(config.obs_dim)
        self.config = config
        self.wte = nn.Linear(config.obs_dim, config.n_embd) if config.tokens == "step" else FeatureTokens(config)
        self.wae = nn.Embedding(config.num_actions + 1, config.n_embd) if config.prev_action else None
        self.wpe = nn.Embedding(config.context, config.n_embd)
        self.wre = nn.Linear(1, config.n_embd) if config.rtg else None
        self.wte_t = nn.Embedding(config.max_timestep, config.n_embd) if config.max_timestep else None
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList([Block(config) for _ in range(time_blocks(config))])
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.heads = Heads(config.n_embd, config.num_actions)
        init_weights(self, config.n_layer)

    def forward(self, obs: torch.Tensor | None, prev_action: torch.Tensor, mask: torch.Tensor | None = None,
                rtg: torch.Tensor | None = None, timestep: torch.Tensor | None = None,
                last_only: bool = False, steps: torch.Tensor | None = None) -> ModelOutput:
        """obs (B, T, D), prev_action (B, T), mask (B, T) False on left padding; for a
        Decision Transformer also rtg (B, T) returns-to-go and timestep (B, T) steps.

        ``last_only``: outputs at the last position only, (B, 1, ...), exactly as the full
        forward gives them; the last block then runs its query, projection and MLP on one
        token instead of T (acting and PPO need no other position).
        ``steps``: ``encode(obs)`` given instead of obs (None), for callers that encode each
        step once although it is in several windows."""
        x, attn_mask = self._tokens(self.encode(obs) if steps is None else steps, prev_action, mask, rtg, timestep)
        for i, block in enumerate(self.h):
            x = block(x, attn_mask, last=last_only and i == len(self.h) - 1)
        return self.heads(self.ln_f(x))

    @torch.no_grad()
    def attention(self, obs: torch.Tensor, prev_action: torch.Tensor, mask: torch.Tensor | None = None,
                  rtg: torch.Tensor | None = None, timestep: torch.Tensor | None = None) -> torch.Tensor:
        """(n_layer, B, n_head, T, T): each block's attention probabilities, as its fused
        attention computes them (for probes: which past steps each position reads). Feature
        tokens: (n_layer, B, T, n_head, N, N), each step's attention across its N tokens."""
        if self.config.tokens != "step":
            return self.wte.attention(obs, self.norm)
        x, attn_mask = self._tokens(self.encode(obs), prev_action, mask, rtg, timestep)
        maps = []
        for block in self.h:
            maps.append(block.attn.probs(block.ln_1(x), attn_mask))
            x = block(x, attn_mask)
        return torch.stack(maps)

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        """(B, T, D) observations -> (B, T, C): each step's own embedding, a function of that step
        alone (its position, previous action and the blocks across time come after)."""
        return self.wte(self.norm(obs)) if self.config.tokens == "step" else self.wte(obs, self.norm)

    @property
    def encodes_steps_once(self) -> bool:
        """Whether callers should encode each step once and pass ``steps``: a feature-token
        encoder is a transformer of its own, and with history a step is in up to K windows."""
        return self.config.tokens == "feature" and self.config.context > 1

    def _tokens(self, steps, prev_action, mask, rtg, timestep) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The input tokens (B, T, C) from the steps' embeddings, and the attention mask (B, 1, T, T),
        or None: causal."""
        B, T, _ = steps.shape
        assert T <= self.config.context, f"window of {T} steps exceeds context {self.config.context}"
        x = steps + self.wpe(torch.arange(T, device=steps.device))  # (B, T, C)
        if self.wae is not None:
            x = x + self.wae(prev_action)
        if self.wre is not None:
            x = x + self.wre((rtg.float() / self.config.rtg_scale).unsqueeze(-1))
        if self.wte_t is not None:
            x = x + self.wte_t(timestep.clamp(0, self.config.max_timestep - 1))
        x = self.drop(x)
        attn_mask = None
        if mask is not None:  # causal, no attending to left padding; the diagonal keeps rows finite
            causal = torch.ones(T, T, dtype=torch.bool, device=steps.device).tril()
            eye = torch.eye(T, dtype=torch.bool, device=steps.device)
            attn_mask = ((causal & mask[:, None, :]) | eye).unsqueeze(1)  # (B, 1, T, T)
        return x, attn_mask
