"""Training: one learner per algorithm (dqn.py, ppo.py, dt.py), registered here; `offline.py` is
`trl train`; checkpoint.py reads and writes checkpoints."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformer_rl.errors import UsageError
from transformer_rl.settings import Algo, EvalMode
from transformer_rl.train.dqn import DQNConfig, DQNLearner
from transformer_rl.train.dt import BCLearner, DTConfig, DTLearner
from transformer_rl.train.learner import Learner
from transformer_rl.train.ppo import PPOConfig, PPOLearner


@dataclass(frozen=True)
class Algorithm:
    """An algorithm's entry: its settings, its learner, and what the loop and the CLI ask of it."""

    config: type  # a dataclass of setting() fields
    learner: type  # a Learner, built as learner(model, config)

    @property
    def on_policy(self) -> bool:
        return self.learner.on_policy

    @property
    def log_keys(self) -> tuple[str, ...]:
        return self.learner.log_keys

    @property
    def acts_on(self) -> str:
        return self.learner.acts_on


# a new algorithm is one file and one entry
LEARNERS: dict[Algo, Algorithm] = {
    Algo.dqn: Algorithm(DQNConfig, DQNLearner),
    Algo.ppo: Algorithm(PPOConfig, PPOLearner),
    Algo.dt: Algorithm(DTConfig, DTLearner),
    Algo.bc: Algorithm(DTConfig, BCLearner),
}


def algorithm(algo: Algo | str) -> Algorithm:
    return LEARNERS[Algo(algo)]


def new_learner(algo: Algo, model, config: Any) -> Learner:
    return algorithm(algo).learner(model, config)


def check_mode(algo: Algo | str, mode: EvalMode | str, option: str = "--mode") -> None:
    """Sampling needs a policy head: not for an algorithm that acts on Q-values."""
    if EvalMode(mode) == EvalMode.sample and algorithm(algo).acts_on == "q":
        raise UsageError(f"{option} sample needs a policy; a DQN checkpoint has Q-values only: use greedy")


def check_target(algo: Algo | str, target_return: float | None) -> None:
    """A Decision Transformer plays for a target return; nothing else takes one."""
    if (target_return is not None) != algorithm(algo).learner.conditioned:
        raise UsageError("--target-return is for Decision Transformer checkpoints (--algo dt) only"
                         if target_return is not None else "a Decision Transformer needs a --target-return")


__all__ = ["LEARNERS", "Algorithm", "DQNConfig", "DTConfig", "Learner", "PPOConfig", "algorithm", "check_mode",
           "check_target", "new_learner"]
