"""Models behind one interface: model(obs (B,T,D), prev_action (B,T), mask) -> q, logits, value.

`ModelArgs` are the model options of `trl train` and `trl run`; `new_model` builds one and sets
its observation scaling from the first data.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn as nn

from transformer_rl.errors import UsageError
from transformer_rl.models.features import SeedGPT
from transformer_rl.models.gpt import GPT, GPTConfig, ModelOutput
from transformer_rl.models.mlp import MLP, MLPConfig
from transformer_rl.settings import (
    POSITIVE,
    Choice,
    Device,
    FeatureEmbed,
    ModelKind,
    Range,
    Readout,
    Tokens,
    check,
    setting,
)

if TYPE_CHECKING:
    from transformer_rl.datasets.reader import Transitions
    from transformer_rl.envs import EnvSpec

__all__ = ["GPT", "GPTConfig", "MLP", "MLPConfig", "ModelArgs", "ModelOutput", "SeedGPT", "Tokens", "autocast",
           "build_model", "check_size", "distinct_steps", "model_config_dict", "new_model", "on_windows",
           "resolve_device"]


class RamNorm(Choice):
    data = "data"
    fixed = "fixed"


@dataclass
class ModelArgs:
    model: ModelKind = setting(ModelKind.gpt, "gpt (transformer) or mlp (dense baseline).")
    context: int = setting(GPTConfig.context, "GPT context: timesteps per window (MLP: --stack).", POSITIVE)
    n_layer: int = setting(GPTConfig.n_layer, "Transformer blocks / MLP hidden layers.", POSITIVE)
    n_head: int = setting(GPTConfig.n_head, "GPT attention heads.", POSITIVE)
    n_embd: int = setting(GPTConfig.n_embd, "GPT embedding width.", POSITIVE)
    hidden: int = setting(MLPConfig.hidden, "MLP hidden width.", POSITIVE)
    stack: int = setting(MLPConfig.context, "MLP: steps of history stacked as its input (a dense net's "
                         "context).", POSITIVE)
    dropout: float = setting(GPTConfig.dropout, "GPT dropout (attention, residual, embeddings).",
                             Range(ge=0, lt=1))
    ram_norm: RamNorm = setting(RamNorm.data, "Byte observations: data (per byte, scaled from the "
                                "first data) or fixed (/255).")
    tokens: Tokens = setting(Tokens.step, "GPT tokens: step (one per timestep, attention across time), feature "
                             "(one per observation feature, attention across a step's features, pooled into "
                             "one token per step for causal blocks across time) or seed (the original "
                             "Transformer-RL's: one observation, causal attention across its features; "
                             "give --context 1).")
    feature_embed: FeatureEmbed = setting(FeatureEmbed.linear, "--tokens feature: a value's embedding: linear "
                                          "(of the normalised value) or table (one of 256 vectors per byte "
                                          "value; byte observations only).")
    feature_id: bool = setting(True, "--tokens feature: add a learned embedding of which feature a token is "
                               "(off: the features are a set).")
    readout: Readout = setting(Readout.summary, "--tokens feature: features -> the step's token: summary (a "
                               "learned token), mean (pooling) or flat (one number per feature, then linear; "
                               "--tokens seed: always flat, no feature ids).")
    time_layers: int = setting(GPTConfig.time_layers, "--tokens feature with --context > 1: causal blocks across "
                               "steps (--n-layer: blocks across features).", POSITIVE)

    def validate(self, spec: EnvSpec | None = None) -> None:
        """The settings alone, and with ``spec`` what they need of the observations."""
        check(self)
        if self.model == ModelKind.gpt and self.stack != 1:
            raise UsageError("--stack is the MLP's history; a GPT's is --context")
        if self.model == ModelKind.gpt and self.n_embd % self.n_head:
            raise UsageError(f"--n-embd {self.n_embd} must be a multiple of --n-head {self.n_head}")
        if self.model != ModelKind.gpt and self.tokens != Tokens.step:
            raise UsageError(f"--tokens {self.tokens} is a GPT layout; use --model gpt")
        if self.tokens == Tokens.step and self.feature_embed != FeatureEmbed.linear:
            raise UsageError(f"--feature-embed {self.feature_embed} embeds feature tokens; add --tokens feature")
        if self.tokens == Tokens.seed and self.context != 1:
            raise UsageError(f"--tokens seed reads one observation, not --context {self.context}; give "
                             "--context 1 (history with feature tokens: --tokens feature)")
        if self.tokens == Tokens.seed and self.feature_embed != FeatureEmbed.linear:
            raise UsageError("--tokens seed embeds values linearly, as the original did; --feature-embed "
                             "table needs --tokens feature")
        if spec is not None and self.feature_embed == FeatureEmbed.table and spec.obs_dtype != "uint8":
            raise UsageError(f"--feature-embed table looks up byte values, and {spec.env_id}'s observations "
                             "are floats; use --feature-embed linear")

    @property
    def window(self) -> int:
        """Timesteps the model sees at once."""
        return self.context if self.model == ModelKind.gpt else self.stack

    def config(self, spec: EnvSpec) -> dict[str, Any]:
        base = {"obs_dim": spec.obs_dim, "num_actions": spec.num_actions, "model": str(self.model)}
        if self.model == ModelKind.gpt:
            gpt = {**base, "context": self.context, "n_layer": self.n_layer, "n_head": self.n_head,
                   "n_embd": self.n_embd, "dropout": self.dropout, "tokens": str(self.tokens)}
            if self.tokens == Tokens.feature:
                gpt.update(feature_embed=str(self.feature_embed), feature_id=self.feature_id,
                           readout=str(self.readout), time_layers=self.time_layers)
            if self.tokens == Tokens.seed:  # the original's choices, whatever else was given
                gpt.update(feature_id=False, readout="flat", prev_action=False)
            return gpt
        return {**base, "hidden": self.hidden, "n_layer": self.n_layer, "context": self.stack}


def new_model(spec: EnvSpec, args: ModelArgs, data: Transitions, seed: int,
              extras: dict[str, Any] | None = None, device: torch.device | str = "cpu") -> nn.Module:
    """A fresh model (seeded, on ``device``) whose observation scaling comes from ``data``;
    ``extras`` are the algorithm's additions to a GPT's config (a Decision Transformer's
    embeddings)."""
    args.validate()
    torch.manual_seed(seed)
    config = args.config(spec)
    if args.model == ModelKind.gpt:
        config.update(extras or {})
    model = build_model(config)
    obs = data.obs.astype(np.float64)
    if spec.obs_dtype == "uint8" and (args.ram_norm == RamNorm.fixed or args.tokens == Tokens.seed):
        mean, std = np.zeros(spec.obs_dim), np.full(spec.obs_dim, 255.0)  # a fixed scale: bytes never
        # seen early stay sane (and the seed's values lie in [0, 1])
    elif args.tokens == Tokens.seed:  # the seed's [0, 1], here over the first data's range
        mean, std = obs.min(0), np.maximum(obs.max(0) - obs.min(0), 1e-3)
    else:  # early (random-policy) data understates how far later states range (CartPole's x):
        # scale so that the data's extremes land within +-5, not only by the std
        mean = obs.mean(0)
        std = np.maximum(obs.std(0), np.abs(obs - mean).max(0) / 5)
        # bytes: at least 8 (a byte constant in the first data may move later)
        std = np.maximum(std, 8.0) if spec.obs_dtype == "uint8" else std + 1e-3
    model.set_obs_normalization(torch.as_tensor(mean), torch.as_tensor(std))
    return model.to(device)


def resolve_device(choice: str = "auto") -> torch.device:
    """--device: auto is cuda when torch sees a GPU, else cpu."""
    choice = Device(choice)
    if choice == Device.cuda and not torch.cuda.is_available():
        raise UsageError("--device cuda: torch sees no CUDA GPU here (a CPU build of torch, or no driver); "
                         "use --device cpu or auto")
    return torch.device("cuda" if choice == Device.cuda or (choice == Device.auto and torch.cuda.is_available())
                        else "cpu")


def autocast(device: torch.device):
    """bf16 autocast on CUDA; a no-op on CPU, which keeps fp32. (No GPU was at hand to measure
    what bf16 buys these small models: see benchmarks/RESULTS.md.)"""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def configure_torch() -> None:
    """One intra-op thread unless TRL_TORCH_THREADS says otherwise: these models are small, and
    torch's spinning worker threads fight EnvPool's for the cores (seen: 3 ms per tiny op)."""
    torch.set_num_threads(torch_threads())


def torch_threads() -> int:
    text = os.environ.get("TRL_TORCH_THREADS", "1")
    if not text.strip().isdigit() or not 1 <= int(text) <= 1024:
        raise UsageError(f"TRL_TORCH_THREADS={text!r} is not a number of threads: give an integer in [1, 1024] "
                         "or unset it")
    return int(text)


def build_model(config: dict[str, Any]) -> nn.Module:
    configure_torch()
    cls, config_cls = _classes(config)
    check_size(config)
    return cls(config_cls(**config))


def check_size(config: dict[str, Any]) -> None:
    """Refuse, before anything is allocated or written, a model whose weights, gradients and
    Adam moments would not fit in half this machine's memory (counted on torch's meta device)."""
    cls, config_cls = _classes(config)
    with torch.random.fork_rng(devices=[]), torch.device("meta"):  # the real init draws the same numbers
        count = sum(p.numel() for p in cls(config_cls(**config)).parameters())
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if count * 16 > memory // 2:
        raise UsageError(f"a {config['model']} of {count:,} parameters needs {count * 16 / 2**30:,.0f} GiB to "
                         f"train, more than half of this machine's {memory / 2**30:,.0f} GiB; choose a smaller model")


def _classes(config: dict[str, Any]) -> tuple[type[nn.Module], type]:
    kind = config.get("model")
    if kind == "gpt":
        return (SeedGPT if config.get("tokens") == "seed" else GPT), GPTConfig
    if kind == "mlp":
        return MLP, MLPConfig
    raise UsageError(f"unknown model {kind!r}: use gpt or mlp")


def distinct_steps(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Windows ``index`` (B, K) of steps -> (the distinct steps (N,), the windows (B, K) as
    indices into them): `on_windows` then encodes each step once."""
    steps, inverse = np.unique(index, return_inverse=True)
    return steps, inverse.reshape(index.shape)


def on_windows(model: nn.Module, obs: torch.Tensor, index: torch.Tensor, prev_action: torch.Tensor,
               mask: torch.Tensor | None, **kwargs) -> ModelOutput:
    """``model(obs[index], prev_action, mask, **kwargs)`` for windows ``index`` (B, K) into one
    row per step ``obs`` (N, D). A feature-token GPT with history encodes each of the N steps
    once rather than once per window it is in (PPO's overlapping windows: up to K times)."""
    if getattr(model, "encodes_steps_once", False):
        return model(None, prev_action, mask, steps=model.encode(obs[None])[0][index], **kwargs)
    return model(obs[index], prev_action, mask, **kwargs)


def model_config_dict(model: nn.Module) -> dict[str, Any]:
    return asdict(model.config)
