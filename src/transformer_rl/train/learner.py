"""What every algorithm's learner offers the run loop and `trl train`.

A learner is built from (model, config) and owns what persists between updates: the optimizer,
and for DQN the target network. ``update`` learns from one iteration's data (DQN: the replay, a
`Transitions`; PPO: the newest rollout) and returns metrics named CleanRL-style
(``losses/...``, ``charts/...``). ``state_dict`` is what a checkpoint keeps to resume.

To add an algorithm: one file here with its config (settings) and learner class, and one entry
in ``LEARNERS`` (train/__init__.py).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch

from transformer_rl.datasets.reader import Transitions
from transformer_rl.distributed import average_gradients
from transformer_rl.errors import UsageError

# progress(done, total, metrics) while an update runs, for a progress bar
Progress = Callable[[int, int, dict[str, float]], None]


class Learner(Protocol):
    """Every member the run loop and the CLI use; a learner class subclasses this to take the
    defaults of the optional ones."""

    model: torch.nn.Module
    cfg: Any  # the algorithm's config (a dataclass of settings)
    optimizer: torch.optim.Optimizer
    updates: int  # gradient steps so far
    on_policy: bool  # learns from the newest rollout (True) or a replay of the dataset (False)
    log_keys: tuple[str, ...]  # the metrics a one-line log shows
    acts_on: str = "policy"  # how its policy acts: "q" (argmax / epsilon-greedy over Q) or "policy"
    conditioned: bool = False  # plays for a return-to-go (a Decision Transformer)

    @property
    def eval_target(self) -> float | None:
        """The return an evaluation plays for (a Decision Transformer's), else None."""
        return None

    @staticmethod
    def model_extras(cfg: Any, spec, data: Transitions) -> dict[str, Any]:
        """What the algorithm adds to the model's config, from the first data (a DT's embeddings)."""
        return {}

    @classmethod
    def saved_target(cls, state: dict[str, Any]) -> float | None:
        """``eval_target`` of the learner whose ``state_dict`` is ``state`` (a checkpoint's)."""
        return None

    def update(self, data: Transitions, *, seed: int, progress: Progress | None = None) -> dict[str, float]:
        ...

    def behaviour(self, num_envs: int, seed: int, env_steps: int, describe: dict[str, Any]):
        """The collection policy after ``env_steps`` env steps (a `ModelPolicy`)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps to resume: by default the optimizer and the update count."""
        return {"optimizer": self.optimizer.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("optimizer") is not None:
            self.optimizer.load_state_dict(state["optimizer"])
            for group in self.optimizer.param_groups:  # the command line's --lr, not the saved one
                group["lr"] = self.cfg.lr
        self.updates = int(state.get("updates", 0))


def optimizer_step(learner: Learner, loss: torch.Tensor, max_grad_norm: float) -> None:
    """One gradient step: backward, the gradients averaged over the ranks of a torchrun job
    (a no-op in one process), clipped to ``max_grad_norm``, then the optimizer's step."""
    params = [p for p in learner.model.parameters() if p.requires_grad]
    learner.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    average_gradients(params)
    torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    learner.optimizer.step()


def check_finite(loss: torch.Tensor, update: int) -> float:
    """The loss as a float; a NaN or infinite loss stops training before the weights change."""
    value = loss.item()
    if not math.isfinite(value):
        raise UsageError(f"training diverged: the loss is {value} at update {update}; lower --lr or check "
                         "the data (nothing was saved from this training: the last good checkpoint stays)")
    return value


def to_tensor(a: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).to(device, non_blocking=True)


class Snapshot:
    """A learner as the actor sees it with --overlap: a shallow copy of it taken between updates
    (so what its behaviour policy reads, such as a DT's best return, is fixed) holding its own
    copy of the model, so the learner can update in another thread meanwhile."""

    def __init__(self, learner: Learner):
        self.learner = learner
        self.model = copy.deepcopy(learner.model).requires_grad_(False).eval()  # acts: no dropout
        self.refresh()

    def behaviour(self, num_envs: int, seed: int, env_steps: int, describe: dict[str, Any]):
        return self.view.behaviour(num_envs, seed, env_steps, describe)

    def refresh(self) -> None:
        """Take the learner's weights (and state) as they are now."""
        self.model.load_state_dict(self.learner.model.state_dict())
        self.view = copy.copy(self.learner)
        self.view.model = self.model
