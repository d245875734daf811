"""Where each `trl run` iteration's experience comes from, by kind of learner.

Both append whole episodes to the run's dataset and return (data for ``learner.update``,
a summary of the play). Before the first update there is no model: the envs play uniformly.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from transformer_rl.collect.job import collect
from transformer_rl.collect.policies import RandomPolicy
from transformer_rl.collect.rollout import CollectConfig, Collector
from transformer_rl.collect.trace import rollout_transitions
from transformer_rl.datasets.ranks import DiscardingWriter, open_writer
from transformer_rl.datasets.reader import Transitions, join, load
from transformer_rl.distributed import all_sum, rank_seed
from transformer_rl.envs import EnvSpec
from transformer_rl.errors import UsageError
from transformer_rl.settings import KeepData


def pool_seed(seed: int, num_envs: int, it: int) -> int:
    """The pool seed of iteration ``it``: env i plays seed + i, so iterations' streams never
    overlap within a run."""
    return seed * 1000 + it * max(10, num_envs)


def _summary(env_steps: int, returns: list[float], start: float, epsilon: float | None = None) -> dict[str, Any]:
    """The play of every rank (under torchrun): env steps summed, returns averaged; the
    exploration rate of the policy that played, if it explores."""
    env_steps, total, count = all_sum([env_steps, float(np.sum(returns)), len(returns)])
    summary = {"env_steps": int(env_steps), "collect_s": time.perf_counter() - start,
               "mean_return": total / count if count else None}
    if epsilon is not None:
        summary["epsilon"] = epsilon
    return summary


class ReplayExperience:
    """Off-policy (DQN, Online DT): each iteration plays ``steps_per_iteration`` more rows of
    fresh episodes with a new pool; the learner gets the dataset's newest ``replay_rows`` rows,
    after the best ``seed_percent`` % of the episodes of ``seed_data`` when given."""

    def __init__(self, spec: EnvSpec, data_dir: Path, cfg, first_iteration: int):
        self.spec, self.data_dir, self.cfg = spec, data_dir, cfg
        self.seed_episodes = None
        if cfg.seed_data is not None:  # RunConfig.validate checked its env
            seed = load(cfg.seed_data)
            best = seed.best_episodes(cfg.seed_percent, cfg.seed_below_return)
            if not len(best):
                raise UsageError(f"--seed-data {cfg.seed_data} has no episode below --seed-below-return "
                                 f"{cfg.seed_below_return:g}; raise it")
            self.seed_episodes = seed.episodes(best)

    def play(self, it: int, learner, env_steps: int, weights: int) -> tuple[Transitions, dict[str, Any]]:
        """Iteration ``it``'s play by ``learner`` (None: uniformly) after ``env_steps`` env steps,
        with the weights of iteration ``weights``."""
        cfg, start = self.cfg, time.perf_counter()
        seed = pool_seed(cfg.seed, cfg.num_envs, it)
        if learner is None:
            policy = RandomPolicy(self.spec.num_actions, rank_seed(seed))
        else:
            policy = learner.behaviour(cfg.num_envs, rank_seed(seed), env_steps,
                                       {"iteration": weights, "checkpoint": f"iter-{weights:03d}"})
        writer = open_writer(self.data_dir, self.spec, seed=seed, num_envs=cfg.num_envs,
                             batch_size=cfg.num_envs, producer=policy.describe(),
                             shard_rows=CollectConfig.shard_rows, append=self.data_dir.exists())
        target = CollectConfig(steps=writer.rows + cfg.steps_per_iteration, num_envs=cfg.num_envs, seed=seed)
        stats = collect(self.spec, self.data_dir, policy, target, writer=writer)
        # under torchrun every rank reads the replay once rank 0 wrote it (one machine, or the
        # run directory on a file system that all machines share)
        data = load(self.data_dir, newest_rows=cfg.learner.replay_rows)
        if self.seed_episodes is not None:
            data = join([self.seed_episodes, data])
        return data, _summary(stats.env_steps, stats.returns, start, policy.exploring)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class RolloutExperience:
    """On-policy (PPO): one pool plays on across iterations (episodes do not restart when the
    policy changes); each iteration is a rollout of ``steps_per_iteration`` env steps sampled
    from the current policy, and the learner gets its episode fragments."""

    def __init__(self, spec: EnvSpec, data_dir: Path, cfg, first_iteration: int):
        self.spec, self.cfg = spec, cfg
        self.seed = pool_seed(cfg.seed, cfg.num_envs, first_iteration)  # a resumed run: new streams
        producer = {"policy": "ppo-sample", "first_iteration": first_iteration,
                    "note": "uniform random in iteration 1, then the policy as it trains"}
        if cfg.keep_data == KeepData.none:  # the learner reads its rollout, not data/: keep nothing
            writer = DiscardingWriter(self.seed, cfg.num_envs)
        else:
            writer = open_writer(data_dir, spec, seed=self.seed, num_envs=cfg.num_envs, batch_size=cfg.num_envs,
                                 producer=producer, shard_rows=CollectConfig.shard_rows, append=data_dir.exists())
        # the K steps before a rollout's first row, and one more so that the first of them
        # has its previous action: every learned row then sees the window it acted on
        self.collector = Collector(spec, CollectConfig(num_envs=cfg.num_envs, seed=self.seed), writer,
                                   trace_context=cfg.model.window + 1)
        self.seed = rank_seed(self.seed)  # the policies' (a rank's own under torchrun)
        self.policy = None  # one policy for the whole stream: it keeps each env's context

    def play(self, it: int, learner, env_steps: int, weights: int) -> tuple[Transitions, dict[str, Any]]:
        """Iteration ``it``'s rollout; the policy is ``learner``'s first (one stream: it keeps each
        env's context), whatever weights it is given later."""
        start, collector = time.perf_counter(), self.collector
        if self.policy is None and learner is not None:
            self.policy = learner.behaviour(self.cfg.num_envs, self.seed, env_steps, {})
        elif self.policy is not None:
            self.policy.new_weights()  # the same model object, updated since the last rollout
        returns_before, steps_before = len(collector.finished_returns), collector.stats.env_steps
        policy = self.policy or RandomPolicy(self.spec.num_actions, self.seed, record_logp=True)
        trace = collector.play(policy, env_steps=self.cfg.steps_per_iteration)
        collector.writer.exchange()  # under torchrun: the ranks' finished episodes to rank 0's writer
        return rollout_transitions(trace), _summary(collector.stats.env_steps - steps_before,
                                                    collector.finished_returns[returns_before:], start)

    def flush(self) -> None:
        self.collector.flush()  # finished episodes are listed before the run's state is

    def close(self) -> None:
        self.collector.close()
