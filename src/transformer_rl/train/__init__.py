"""Training: one learner per algorithm (dqn.py, ppo.py), registered here; `offline.py` is
`trl train`; checkpoint.py reads and writes checkpoints."""

from __future__ import annotations

from typing import Any

from transformer_rl.settings import Algo
from transformer_rl.train.dqn import DQNConfig, DQNLearner
from transformer_rl.train.learner import Learner
from transformer_rl.train.ppo import PPOConfig, PPOLearner

# algorithm -> (config dataclass, learner class): a new algorithm is one file and one entry
LEARNERS: dict[Algo, tuple[type, type]] = {
    Algo.dqn: (DQNConfig, DQNLearner),
    Algo.ppo: (PPOConfig, PPOLearner),
}


def new_learner(algo: Algo, model, config: Any) -> Learner:
    return LEARNERS[Algo(algo)][1](model, config)


__all__ = ["LEARNERS", "DQNConfig", "Learner", "PPOConfig", "new_learner"]
