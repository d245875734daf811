"""Training: one learner per algorithm (dqn.py, ppo.py), registered here; `offline.py` is
`trl train`; checkpoint.py reads and writes checkpoints."""

from __future__ import annotations

from typing import Any

from transformer_rl.settings import Algo
from transformer_rl.train.dqn import DQNConfig, DQNLearner
from transformer_rl.train.dt import BCLearner, DTConfig, DTLearner
from transformer_rl.train.learner import Learner
from transformer_rl.train.ppo import PPOConfig, PPOLearner

# algorithm -> (config dataclass, learner class): a new algorithm is one file and one entry
LEARNERS: dict[Algo, tuple[type, type]] = {
    Algo.dqn: (DQNConfig, DQNLearner),
    Algo.ppo: (PPOConfig, PPOLearner),
    Algo.dt: (DTConfig, DTLearner),
    Algo.bc: (DTConfig, BCLearner),
}


def new_learner(algo: Algo, model, config: Any) -> Learner:
    return LEARNERS[Algo(algo)][1](model, config)


def model_extras(algo: Algo, config: Any, spec, data) -> dict[str, Any]:
    """What the algorithm adds to the model's config (a Decision Transformer's embeddings)."""
    extras = getattr(LEARNERS[Algo(algo)][1], "model_extras", None)
    return extras(config, spec, data) if extras else {}


__all__ = ["LEARNERS", "DQNConfig", "DTConfig", "Learner", "PPOConfig", "model_extras", "new_learner"]
