"""Models behind one interface: model(obs (B,T,D), prev_action (B,T), mask) -> q, logits, value."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch.nn as nn

from transformer_rl.errors import UsageError
from transformer_rl.models.gpt import GPT, GPTConfig, ModelOutput
from transformer_rl.models.mlp import MLP, MLPConfig

__all__ = ["GPT", "GPTConfig", "MLP", "MLPConfig", "ModelOutput", "build_model", "model_config_dict"]


def configure_torch() -> None:
    """One intra-op thread unless TRL_TORCH_THREADS says otherwise: these models are small, and
    torch's spinning worker threads fight EnvPool's for the cores (seen: 3 ms per tiny op)."""
    import os

    import torch

    torch.set_num_threads(int(os.environ.get("TRL_TORCH_THREADS", "1")))


def build_model(config: dict[str, Any]) -> nn.Module:
    configure_torch()
    kind = config.get("model")
    if kind == "gpt":
        return GPT(GPTConfig(**config))
    if kind == "mlp":
        return MLP(MLPConfig(**config))
    raise UsageError(f"unknown model {kind!r}: use gpt or mlp")


def model_config_dict(model: nn.Module) -> dict[str, Any]:
    return asdict(model.config)
